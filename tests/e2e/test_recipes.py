"""Every Qwen2.5-Math recipe, as written, end to end on CPU through the hardware switch `SMOKE=cpu`
(recipes/qwen2.5-math-7b/common.sh): verl's real V1 trainer on 2 CPU ranks with the recipe's own
algorithm settings -- dynamic batch size with a per-rank token budget, several mini-batches per step,
remove-padding, gradient checkpointing, validation before training and at step 2 with n = 2, the
math reward (`siren_verl.reward`) on the embedded math toy, a checkpoint at step 2.

Each recipe: 2 steps that log its docs/methods.md §8 metrics (and omit the ones it lacks), validation metrics
per benchmark before training and at step 2, the reward's counters, controller state in the
checkpoint. SIREN, AER and PAR then resume for a 3rd step whose controller values continue the
checkpointed state by the spec's recurrences (docs/methods.md §4-§6, recomputed here from the logged values,
independently of the controller). The naive case runs through the 1.5B wrapper (`run.sh naive`, which
execs naive.sh). SIREN with PAR's token weighting and its token_first ablation, in one run, takes 2
steps through siren.sh's pass-through overrides.
(These replace the cpu_smoke-preset runs of every method that tests/e2e/test_presets.py made.)
"""

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# every method gets the driver's entropy statistics (docs/methods.md §8), `none` included
FULL = ["entropy/full_mean", "entropy/full_p50", "entropy/full_p90", "entropy/full_p99"]
NUCLEUS = ["entropy/nucleus_mean", "entropy/nucleus_size_mean"]
REG = ["entropy/coef", "entropy/reg_loss"]  # methods with an entropy regulariser
SELECTED = ["entropy/selected_frac", "entropy/selected_mean"]
SPEC_METRICS = [
    *FULL, *NUCLEUS, *SELECTED, *REG, "entropy/anchor", "entropy/target", "entropy/pos_adv_weight",
]  # fmt: skip
REWARD_COUNTERS = ["reward/timeouts", "reward/parse_failures"]
BENCHMARKS = ["toy_int", "toy_frac"]  # the math toy's validation sets (siren_verl/toy/math_toy.py)
LN_VOCAB = 4.5951  # ln 99: the math toy's character vocabulary bounds every entropy


@dataclass
class Case:
    recipe: str  # recipes/qwen2.5-math-7b/<recipe>.sh
    method: str  # its entropy_control.method
    logs: list[str] = field(default_factory=list)  # every step, besides FULL and the split metrics
    args: list[str] = field(default_factory=list)  # extra Hydra overrides (none: the recipe as written)
    resume: bool = False
    case_id: str | None = None
    via_1_5b: bool = False  # launched through recipes/qwen2.5-math-1.5b/run.sh <recipe> (which execs it)

    @property
    def id(self) -> str:
        return self.case_id or self.recipe


CASES = [
    Case("grpo", "none"),
    Case("siren", "siren", REG + SELECTED + NUCLEUS + ["entropy/anchor"], resume=True),
    # AER as written starts at α_0 = 0 and H* = ρ·H_0 lies below the entropy, so α_k would stay 0;
    # from α_0 = 0.02 with η = 0.001 it moves inside (0, α_max), where a re-initialised α_3 shows
    Case(
        "aer",
        "aer",
        REG + SELECTED + ["entropy/anchor", "entropy/target"],
        ["entropy_control.aer.alpha0=0.02", "entropy_control.aer.eta=0.001"],
        resume=True,
    ),
    Case("par", "par", ["entropy/pos_adv_weight"], resume=True),
    # through the 1.5B wrapper, `run.sh naive`: it execs naive.sh as written (MODEL_SIZE=1.5b), so
    # this one run covers both launchers
    Case("naive", "naive", REG + SELECTED, via_1_5b=True),
    Case("adaptive_target", "adaptive_target", REG + SELECTED + ["entropy/target"]),
    Case("entropy_adv", "entropy_adv"),
    Case("forking_tokens", "forking_tokens", SELECTED),
    Case("clip_cov", "clip_cov"),
    Case("kl_cov", "kl_cov"),
    # a part of one preset on another, through the recipe's pass-through overrides: SIREN with
    # PAR's token weighting, and with SIREN's token_first ablation (siren.sh's usage text) -- its
    # selection and its regularised entropy differ (full vs nucleus), so the engine must deliver both
    # per token. SIREN's other ablations combine parts the cases above already run (full-entropy
    # measure, all tokens, the bonus without H_0); their resolution and maths are unit-tested.
    Case(
        "siren",
        "siren",
        REG + SELECTED + NUCLEUS + ["entropy/anchor", "entropy/pos_adv_weight"],
        ["entropy_control.token_weighting=par", "entropy_control.token_first=true"],
        case_id="siren+par+token_first",
    ),
]


def check_logged(case: Case, steps: dict[int, dict], split_metrics) -> None:
    for n, s in steps.items():
        expected = FULL + case.logs + split_metrics(s) + REWARD_COUNTERS
        missing = [k for k in expected if k not in s]
        assert not missing, f"{case.id} step {n} lacks {missing}"
        extra = [k for k in SPEC_METRICS if k in s and k not in expected]
        assert not extra, f"{case.id} step {n} logs {extra}, quantities it does not have (docs/methods.md §8: omit)"
        assert 0 < s["entropy/full_mean"] <= LN_VOCAB
        if "entropy/selected_frac" in s:
            assert 0 < s["entropy/selected_frac"] <= 1


def val_metrics(step: dict, n: int) -> dict[str, float]:
    """verl's per-benchmark validation scores of one logged step: {data_source: mean@n}."""
    out = {}
    for name in BENCHMARKS:
        keys = [k for k in step if k.startswith(f"val-core/{name}/") and k.endswith(f"/mean@{n}")]
        if keys:
            out[name] = step[keys[0]]
    return out


def recipe_values(script: str, args: list[str]) -> dict[str, str]:
    """The Hydra overrides a recipe launches with (its `--dry-run` under SMOKE=cpu): key -> the
    last value given, so the recurrences below use the recipe's own constants."""
    proc = subprocess.run(
        ["bash", script, *args, "--dry-run"],
        env={**os.environ, "SMOKE": "cpu", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    words = shlex.split(proc.stdout.replace("\\\n", " "))
    return {
        w.split("=", 1)[0].lstrip("+"): w.split("=", 1)[1]
        for w in words
        if "=" in w and "." in w.split("=", 1)[0]
    }


def expected_next(case: Case, step: dict, state: dict, values: dict[str, str]) -> dict[str, float]:
    """Controller values of step k+1 from step k's logged values, by the spec's recurrences, with
    the recipe's constants (`values`: its launch overrides)."""
    h_k = step["entropy/full_mean"]  # the step's token-mean (full) entropy H_k

    def num(key):
        return float(values[f"entropy_control.{key}"])

    if case.method == "aer":  # docs/methods.md §4.2: α_{k+1} = clip(α_k + η(H* − H_k), 0, α_max), H* = ρ·H_0
        assert values["entropy_control.aer.anchored_target"].lower() == "true"
        target = num("aer.rho_target") * state["anchor"]
        alpha = step["entropy/coef"] + num("aer.eta") * (target - h_k)
        return {"entropy/coef": min(max(alpha, 0.0), num("aer.alpha_max"))}
    if case.method == "adaptive_target":  # docs/methods.md §6: c_{k+1} = max(0, c_k + Δ·sign(H* − H_k))
        target = num("adaptive_target.target")
        sign = (target > h_k) - (target < h_k)
        return {"entropy/coef": max(0.0, step["entropy/coef"] + num("adaptive_target.delta") * sign)}
    if case.method == "par":  # docs/methods.md §5 entropy-guided: λ_{k+1} = min(1, λ_k + Δ) while H_k ≥ δ
        assert values["entropy_control.par.schedule"] == "entropy_guided"
        assert h_k >= num("par.delta")
        return {"entropy/pos_adv_weight": min(1.0, step["entropy/pos_adv_weight"] + num("par.step"))}
    return {}


def run_recipe(
    e2e, toy_dir, tmp_path, script: str, args: list[str], log_name: str, *, ray_address: str, exp: str
):
    env = e2e.clean_env(
        toy_dir,
        SMOKE="cpu",
        PYTHON=sys.executable,
        CKPT_DIR=str(tmp_path / "runs"),
        EXP_NAME=exp,
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    return e2e.run_logged(["bash", script, *args], tmp_path, env, tmp_path / log_name, timeout=1500)


RECIPES_7B = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "qwen2.5-math-7b")
RUN_1_5B = os.path.join(RECIPES_7B, "..", "qwen2.5-math-1.5b", "run.sh")


def check_two_steps(case: Case, run_dir, log: str, e2e, val_n: int) -> tuple[dict, dict]:
    steps = e2e.read_metrics(run_dir / "metrics.jsonl")
    # verl logs validation before training as step 0 and merges step 2's into step 2
    assert sorted(steps) == [0, 1, 2], log[-3000:]
    for n in (0, 2):
        scores = val_metrics(steps[n], val_n)
        assert sorted(scores) == sorted(BENCHMARKS), f"step {n} validation: {sorted(steps[n])}"
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    train_steps = {n: steps[n] for n in (1, 2)}
    check_logged(case, train_steps, e2e.split_metrics)
    # the math reward scored boxed answers: right and wrong ones in a batch (non-zero advantages)
    assert any(s["critic/score/max"] > s["critic/score/min"] for s in train_steps.values())

    ckpt = run_dir / "global_step_2"
    state = json.loads((ckpt / "entropy_control.json").read_text())
    assert state["method"] == case.method and state["steps_observed"] == 2
    if "entropy/anchor" in case.logs:  # measured once, at step 1, then constant and checkpointed
        assert steps[1]["entropy/anchor"] == steps[2]["entropy/anchor"] == state["anchor"]
    return train_steps, state


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_recipe_two_steps_on_cpu(case, tmp_path, math_toy_dir, e2e, ray_head):
    script = os.path.join(RECIPES_7B, f"{case.recipe}.sh")
    args = case.args
    if case.via_1_5b:
        script, args = RUN_1_5B, [case.recipe, *case.args]
    exp = f"{case.id}-smoke"
    log = run_recipe(e2e, math_toy_dir, tmp_path, script, args, "run.log", ray_address=ray_head, exp=exp)
    run_dir = tmp_path / "runs" / "siren-verl" / exp
    values = recipe_values(script, args)
    val_n = int(values["actor_rollout_ref.rollout.val_kwargs.n"])
    steps, state = check_two_steps(case, run_dir, log, e2e, val_n)
    for key, value in expected_next(case, steps[1], state, values).items():
        assert steps[2][key] == pytest.approx(value, rel=1e-5, abs=1e-9), key
    if not case.resume:
        return

    # ---- resume: step 3 from global_step_2; the controller continues, it does not start over ----
    log2 = run_recipe(
        e2e,
        math_toy_dir,
        tmp_path,
        script,
        [*args, "trainer.total_training_steps=3"],
        "resume.log",
        ray_address=ray_head,
        exp=exp,
    )
    resumed = e2e.read_metrics(run_dir / "metrics.jsonl")
    # step 3 trained; "step 2" holds only the resumed run's validation before training
    assert sorted(resumed) == [2, 3], log2[-3000:]
    assert all(k.startswith(("val-", "timing_s/")) for k in resumed[2]), sorted(resumed[2])
    assert "global_step_2" in log2  # verl: "Resuming from .../global_step_2"
    check_logged(case, {3: resumed[3]}, e2e.split_metrics)
    for key in ("entropy/anchor", "entropy/target"):
        if key in case.logs:
            assert resumed[3][key] == steps[2][key], key
    for key, value in expected_next(case, steps[2], state, values).items():
        assert resumed[3][key] == pytest.approx(value, rel=1e-5, abs=1e-9), key
    state3 = json.loads((run_dir / "global_step_3" / "entropy_control.json").read_text())
    assert state3["steps_observed"] == 3 and state3["anchor"] == state["anchor"]


def test_dry_run_prints_the_swapped_command(e2e):
    proc = subprocess.run(
        ["bash", os.path.join(RECIPES_7B, "siren.sh"), "--dry-run"],
        env={**os.environ, "SMOKE": "cpu", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "actor_rollout_ref.rollout.name=hf" in proc.stdout and "trainer.device=cpu" in proc.stdout
