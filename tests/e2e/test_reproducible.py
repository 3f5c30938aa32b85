"""Two SIREN runs of 2 steps with the same settings and seed log the same metrics, exactly (all but
the wall-clock ones: timing_s/*, perf/*).

What makes it hold: the hf rollout draws each response from its own generator seeded by (seed,
step, the prompt's row in the step's batch, prompt tokens, sample) (siren_verl/verl_glue/hf_rollout.py
`request_seed`), and the trainer numbers the prompts and sorts each step's batch by (prompt, sample)
before anything is computed (siren_verl/verl_glue/trainer.py `sequential_prompt_uid`), so the
micro-batch partition and every float sum are the same in both runs. SIREN is the method: its
update depends on that partition (the anchored square is per micro-batch), so step 2 matches only
if step 1's update did bit for bit.

One family is compared to 1e-5 instead: the rollout-vs-trainer log-prob diagnostics
(rollout_corr/*, training/rollout_probs_diff_*). The hf server batches whatever requests arrive
together, so a response's rollout log-probs carry the float rounding of its batch's size and padding
(the rollout itself is the same: each token is drawn by its own generator's uniform).
"""

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

WALL_CLOCK_PREFIXES = ("timing_s/", "timing_per_token_ms/", "perf/", "actor/perf/")
ROLLOUT_LOGPROB_PREFIXES = ("rollout_corr/", "training/rollout_probs_diff_")
OVERRIDES = [
    "entropy_control.method=siren",
    "trainer.total_training_steps=2",
    "trainer.val_before_train=False",
    "trainer.test_freq=-1",
    "trainer.save_freq=-1",
]


def deterministic_part(step: dict) -> dict:
    return {k: v for k, v in step.items() if not k.startswith(WALL_CLOCK_PREFIXES)}


def test_same_seed_same_metrics(tmp_path, toy_dir, e2e, ray_head):
    runs = []
    for name in ("first", "second"):
        workdir = tmp_path / name
        workdir.mkdir()
        env = {"RAY_ADDRESS": ray_head} if ray_head else {}
        # an absolute path: on the shared Ray head the trainer's working directory is not workdir
        metrics = workdir / "metrics.jsonl"
        logger_path = f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={metrics}"
        log = e2e.train(toy_dir, workdir, [*OVERRIDES, logger_path], "run.log", **env)
        steps = e2e.read_metrics(metrics)
        assert sorted(steps) == [1, 2], log[-3000:]
        runs.append({step: deterministic_part(values) for step, values in steps.items()})
    first, second = runs
    for step in (1, 2):
        assert sorted(first[step]) == sorted(second[step]), step
        exact = [k for k in first[step] if not k.startswith(ROLLOUT_LOGPROB_PREFIXES)]
        differ = {k: (first[step][k], second[step][k]) for k in exact if first[step][k] != second[step][k]}
        assert not differ, (step, differ)
        for key in set(first[step]) - set(exact):
            assert first[step][key] == pytest.approx(second[step][key], rel=1e-5, abs=1e-5), (step, key)
    # the comparison can fail: the responses are sampled (they vary within the batch), SIREN's
    # regulariser acted, and step 2 trained on a policy step 1 changed
    assert first[1]["response_length/max"] > first[1]["response_length/min"]
    assert "entropy/reg_loss" in first[2]
    assert first[1]["entropy/full_mean"] != first[2]["entropy/full_mean"]
