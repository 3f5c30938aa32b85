"""Every named method is a preset over orthogonal parts (docs/methods.md §6, last paragraph).

A part left `null` in `entropy_control` takes the preset's value; any part can be overridden from
the command line (`entropy_control.token_selection=all`). The parts:

| part                 | values                                   | meaning                                                |
|----------------------|------------------------------------------|--------------------------------------------------------|
| `entropy_measure`    | full, nucleus                            | the entropy the regulariser acts on (docs/methods.md §1)          |
| `selection_measure`  | full, nucleus                            | the entropy the token selection ranks (docs/methods.md §2)        |
| `token_selection`    | all, peak, batch_top                     | the regulariser's tokens: every response token, the   |
|                      |                                          | per-response peak quantile (§2), the batch top-ρ (§6)  |
| `regularizer`        | none, bonus, anchored_square,            | `-c·H̄`, `c·(H̄-H_0)²` (§3), Skywork-OR1 gated bonus    |
|                      | adaptive_target                          | (§6 adaptive_target)                                   |
| `coef_schedule`      | constant, aer, adaptive                  | c = `coef`; AER α_k (+ difficulty allocation, §4);     |
|                      |                                          | adaptive-target c_k (§6)                               |
| `token_weighting`    | none, par                                | PAR weights on the PG surrogate (§5)                   |
| `advantage_shaping`  | none, entropy_adv                        | A += min(a·H, abs(A)/κ) (§6)                           |
| `pg_token_selection` | all, batch_top                           | PG loss only on the batch top-ρ tokens (§6 forking)    |
| `policy_loss`        | verl, clip_cov, kl_cov                   | verl's own loss mode as configured, or forced (§6)     |

Pure python: no verl, no torch (the parts' tables are read without importing torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from siren_verl.methods.parts.regularizers import REGULARIZERS as REGULARIZER_TABLE
from siren_verl.methods.parts.schedules import COEF_SCHEDULES as COEF_SCHEDULE_TABLE

ENTROPY_MEASURES = ("full", "nucleus")
TOKEN_SELECTIONS = ("all", "peak", "batch_top")
REGULARIZERS = ("none", *REGULARIZER_TABLE)  # the forms registered in parts/regularizers.py
COEF_SCHEDULES = tuple(COEF_SCHEDULE_TABLE)  # the schedules registered in parts/schedules.py
TOKEN_WEIGHTINGS = ("none", "par")
ADVANTAGE_SHAPINGS = ("none", "entropy_adv")
PG_TOKEN_SELECTIONS = ("all", "batch_top")
POLICY_LOSSES = ("verl", "clip_cov", "kl_cov")

# name -> allowed values, in the order `siren-verl methods` prints them
PARTS: dict[str, tuple[str, ...]] = {
    "entropy_measure": ENTROPY_MEASURES,
    "selection_measure": ENTROPY_MEASURES,
    "token_selection": TOKEN_SELECTIONS,
    "regularizer": REGULARIZERS,
    "coef_schedule": COEF_SCHEDULES,
    "token_weighting": TOKEN_WEIGHTINGS,
    "advantage_shaping": ADVANTAGE_SHAPINGS,
    "pg_token_selection": PG_TOKEN_SELECTIONS,
    "policy_loss": POLICY_LOSSES,
}

# `agg_mode`: how a regulariser aggregates per-token entropies into H̄ (names and meanings as in
# docs/methods.md §0, §3). Per micro-batch: the mean over each response then over responses, or the
# mean over every token (siren_verl/entropy/aggregate.py); the only means defined without the whole
# batch's sizes, so the only ones the anchored square (nonlinear in H̄) can use. Over the whole
# batch: the token sum of each response averaged over responses, optionally divided by the
# response-length horizon. "pg": the policy-gradient loss's own aggregation.
LOCAL_AGG_MODES = ("seq-mean-token-mean", "token-mean")
GLOBAL_AGG_MODES = ("seq-mean-token-sum", "seq-mean-token-sum-norm")
PG_AGG_MODE = "pg"
AGG_MODES = (*LOCAL_AGG_MODES, *GLOBAL_AGG_MODES, PG_AGG_MODE)


@dataclass(frozen=True)
class Preset:
    """The parts and numeric defaults of one named method."""

    description: str
    source: str
    parts: dict[str, str]
    coef: float = 0.0
    agg_mode: str = "pg"
    notes: tuple[str, ...] = field(default_factory=tuple)


_BASE_PARTS = {
    "entropy_measure": "full",
    "selection_measure": "full",
    "token_selection": "all",
    "regularizer": "none",
    "coef_schedule": "constant",
    "token_weighting": "none",
    "advantage_shaping": "none",
    "pg_token_selection": "all",
    "policy_loss": "verl",
}


def _parts(**overrides: str) -> dict[str, str]:
    parts = dict(_BASE_PARTS)
    parts.update(overrides)
    return parts


PRESETS: dict[str, Preset] = {
    "none": Preset(
        description="plain GRPO / Dr.GRPO: verl's own loss; entropy statistics are still logged",
        source="docs/methods.md §6 none",
        parts=_parts(),
    ),
    "siren": Preset(
        description="SIREN: β·(H̄ − H_0)² over the per-response peak-entropy tokens of the nucleus entropy",
        source="docs/methods.md §1-§3",
        parts=_parts(
            entropy_measure="nucleus",
            selection_measure="nucleus",
            token_selection="peak",
            regularizer="anchored_square",
        ),
        coef=0.005,
        agg_mode="seq-mean-token-mean",
        notes=("ablations: without_top_p, without_peak_mask, without_anchor, token_first",),
    ),
    "naive": Preset(
        description="entropy bonus −β·agg(H) over all tokens with the PG agg mode",
        source="docs/methods.md §6 naive",
        parts=_parts(regularizer="bonus"),
        coef=0.001,
        notes=("coef default 0.001 (inferred: verl's example entropy_coeff; the sources give none)",),
    ),
    "aer": Preset(
        description="AER: bonus with a dynamic global coefficient towards ρ·H_0 and difficulty-aware allocation",
        source="docs/methods.md §4 (inferred)",
        parts=_parts(regularizer="bonus", coef_schedule="aer"),
        notes=("switches: aer.anchored_target, aer.dynamic_coef, aer.difficulty",),
    ),
    "par": Preset(
        description="Positive-Advantage Reweighting: λ on positive-advantage token losses, entropy-guided λ",
        source="docs/methods.md §5",
        parts=_parts(token_weighting="par"),
        notes=("par.schedule: entropy_guided | stage | epoch | constant",),
    ),
    "adaptive_target": Preset(
        description="Skywork-OR1 adaptive entropy target: bonus c_k·H applied while H_k ≤ H*",
        source="docs/methods.md §6 adaptive_target",
        parts=_parts(regularizer="adaptive_target", coef_schedule="adaptive"),
    ),
    "entropy_adv": Preset(
        description="entropy-based advantage shaping A ← A + min(a·H, |A|/κ)",
        source="docs/methods.md §6 entropy_adv",
        parts=_parts(advantage_shaping="entropy_adv"),
    ),
    "forking_tokens": Preset(
        description="80/20 rule: PG loss only on the batch's top-ρ highest full-entropy tokens",
        source="docs/methods.md §6 forking_tokens",
        parts=_parts(pg_token_selection="batch_top"),
    ),
    "clip_cov": Preset(
        description="verl's own clip_cov policy loss, passed through unchanged",
        source="docs/methods.md §6 clip_cov",
        parts=_parts(policy_loss="clip_cov"),
    ),
    "kl_cov": Preset(
        description="verl's own kl_cov policy loss, passed through unchanged",
        source="docs/methods.md §6 kl_cov",
        parts=_parts(policy_loss="kl_cov"),
    ),
}

METHODS: tuple[str, ...] = tuple(PRESETS)
