"""Every preset through verl's real V1 trainer on CPU (`cpu_smoke`): 2 steps that log the preset's
SPEC §8 metrics (and omit the ones it lacks), then a resumed 3rd step whose controller values
continue the checkpointed state (the schedules' recurrences, SPEC §4-§6, recomputed here from the
logged step values, independently of the controller).

SIREN itself (3 steps + resume) is tests/e2e/test_cpu_smoke.py; its ablations run 2 steps here.
"""

import json
from dataclasses import dataclass, field

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# every method gets the driver's entropy statistics (SPEC §8), `none` included
FULL = ["entropy/full_mean", "entropy/full_p50", "entropy/full_p90", "entropy/full_p99"]
NUCLEUS = ["entropy/nucleus_mean", "entropy/nucleus_size_mean"]
REG = ["entropy/coef", "entropy/reg_loss"]  # methods with an entropy regulariser
SELECTED = ["entropy/selected_frac", "entropy/selected_mean"]
SPEC_METRICS = [
    *FULL, *NUCLEUS, *SELECTED, *REG, "entropy/anchor", "entropy/target", "entropy/pos_adv_weight",
]  # fmt: skip


@dataclass
class Case:
    method: str
    overrides: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)  # every step, besides FULL and the split metrics
    case_id: str | None = None
    resume: bool = True

    @property
    def id(self) -> str:
        return self.case_id or self.method


# AER: H* = 0.5·H_0 lies below the toy's entropy, so α_k falls; from α_0 = 0.02 with η = 0.001 it
# stays inside (0, α_max) for the 3 steps, where a re-initialised α_3 (= α_0) would show.
AER_OVERRIDES = ["entropy_control.aer.alpha0=0.02", "entropy_control.aer.eta=0.001"]
# adaptive target anchored ABOVE the initial entropy (H* = 2·H_0): c_k rises 0, Δ, 2Δ
ADAPTIVE_OVERRIDES = ["entropy_control.adaptive_target.target=null", "entropy_control.adaptive_target.anchor_ratio=2.0"]

CASES = [
    Case("none"),
    Case("naive", logs=REG + SELECTED),
    Case("aer", AER_OVERRIDES, logs=REG + SELECTED + ["entropy/anchor", "entropy/target"]),
    Case("par", logs=["entropy/pos_adv_weight"]),
    Case("adaptive_target", ADAPTIVE_OVERRIDES, logs=REG + SELECTED + ["entropy/anchor", "entropy/target"]),
    Case("entropy_adv"),
    Case("forking_tokens", logs=SELECTED),
    Case("clip_cov"),
    Case("kl_cov"),
    # a part of one preset on another: SIREN with PAR's token weighting
    Case(
        "siren",
        ["entropy_control.token_weighting=par"],
        logs=REG + SELECTED + NUCLEUS + ["entropy/anchor", "entropy/pos_adv_weight"],
        case_id="siren+par",
    ),
]
ABLATIONS = {
    "without_top_p": REG + SELECTED + ["entropy/anchor"],  # full entropy: no nucleus statistics
    "without_peak_mask": REG + SELECTED + NUCLEUS + ["entropy/anchor"],
    "without_anchor": REG + SELECTED + NUCLEUS,  # −β·H̄: no H_0
    "token_first": REG + SELECTED + NUCLEUS + ["entropy/anchor"],
}
CASES += [
    Case("siren", [f"entropy_control.{name}=true"], logs=logs, case_id=f"siren-{name}", resume=False)
    for name, logs in ABLATIONS.items()
]


def check_logged(case: Case, steps: dict[int, dict], split_metrics) -> None:
    for n, s in steps.items():
        expected = FULL + case.logs + split_metrics(s)
        missing = [k for k in expected if k not in s]
        assert not missing, f"{case.id} step {n} lacks {missing}"
        extra = [k for k in SPEC_METRICS if k in s and k not in expected]
        assert not extra, f"{case.id} step {n} logs {extra}, quantities it does not have (SPEC §8: omit)"
        assert 0 < s["entropy/full_mean"] <= 3.2958 + 1e-4  # ln 27: the toy's vocabulary
        if "entropy/selected_frac" in s:
            assert 0 < s["entropy/selected_frac"] <= 1


def expected_next(case: Case, step: dict, state_anchor: float | None) -> dict[str, float]:
    """Controller values of step k+1 from step k's logged values, by the spec's recurrences."""
    h_k = step["entropy/full_mean"]  # the step's token-mean (full) entropy H_k
    if case.method == "aer":  # SPEC §4.2: α_{k+1} = clip(α_k + η(H* − H_k), 0, α_max)
        target = 0.5 * state_anchor
        return {"entropy/coef": min(max(step["entropy/coef"] + 0.001 * (target - h_k), 0.0), 0.05)}
    if case.method == "adaptive_target":  # SPEC §6: c_{k+1} = max(0, c_k + Δ·sign(H* − H_k)), H_k ≤ H*
        target = 2.0 * state_anchor
        assert h_k <= target
        sign = (target > h_k) - (target < h_k)
        return {"entropy/coef": max(0.0, step["entropy/coef"] + 0.005 * sign)}
    if "entropy/pos_adv_weight" in case.logs:  # SPEC §5 entropy-guided: H_k ≥ δ = 0.2, so λ rises by Δ
        assert h_k >= 0.2
        return {"entropy/pos_adv_weight": min(1.0, step["entropy/pos_adv_weight"] + 0.05)}
    return {}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_preset_two_steps_then_resume(case, tmp_path, toy_dir, e2e):
    overrides = [f"entropy_control.method={case.method}", *case.overrides, "trainer.total_training_steps=2"]
    log = e2e.train(toy_dir, tmp_path, overrides, "run.log")
    steps = e2e.read_metrics(tmp_path / "outputs" / "siren_verl_cpu" / f"cpu_smoke_{case.method}.jsonl")
    assert sorted(steps) == [1, 2], log[-3000:]
    check_logged(case, steps, e2e.split_metrics)

    ckpt = tmp_path / "outputs" / "siren_verl_cpu" / f"cpu_smoke_{case.method}" / "checkpoints"
    state = json.loads((ckpt / "global_step_2" / "entropy_control.json").read_text())
    assert state["method"] == case.method and state["steps_observed"] == 2
    if "entropy/anchor" in case.logs:  # measured once, at step 1, then constant and checkpointed
        assert steps[1]["entropy/anchor"] == steps[2]["entropy/anchor"] == state["anchor"]
    else:
        assert state["anchor"] is None
    # the schedules' values: step 2 follows step 1 by the spec's recurrence
    for key, value in expected_next(case, steps[1], state["anchor"]).items():
        assert steps[2][key] == pytest.approx(value, rel=1e-5, abs=1e-9), key
    if not case.resume:
        return

    # ---- resume: step 3 from global_step_2; the controller continues, it does not start over ----
    log2 = e2e.train(
        toy_dir,
        tmp_path,
        [*overrides[:-1], "trainer.total_training_steps=3", "ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_ROOT=resumed"],
        "resume.log",
    )
    resumed = e2e.read_metrics(tmp_path / "resumed" / "siren_verl_cpu" / f"cpu_smoke_{case.method}.jsonl")
    assert sorted(resumed) == [3], log2[-3000:]
    assert "global_step_2" in log2  # siren-verl train: "resuming from .../global_step_2 ..."
    check_logged(case, resumed, e2e.split_metrics)
    for key in ("entropy/anchor", "entropy/target"):
        if key in case.logs:
            assert resumed[3][key] == steps[2][key], key
    for key, value in expected_next(case, steps[2], state["anchor"]).items():
        assert resumed[3][key] == pytest.approx(value, rel=1e-5, abs=1e-9), key
    state3 = json.loads((ckpt / "global_step_3" / "entropy_control.json").read_text())
    assert state3["steps_observed"] == 3 and state3["anchor"] == state["anchor"]
