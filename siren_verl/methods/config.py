"""The `entropy_control` config group: schema, validation and preset resolution (docs/methods.md §6, §10).

Validated on the driver at start-up, before Ray starts: an unknown method, an unknown key, a value
out of range or an invalid combination of parts raises `ConfigError` (a `ValueError`) naming the
full key and its allowed range, e.g. `entropy_control.top_p=1.5: must be a finite number in (0, 1]`.

Pure python: no verl, no torch, no omegaconf (the glue converts the Hydra node to a dict first).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any

from siren_verl.entropy.conventions import BOUNDARIES
from siren_verl.methods.parts.regularizers import REGULARIZERS
from siren_verl.methods.parts.schedules import COEF_SCHEDULES, LAMBDA_SCHEDULES
from siren_verl.methods.presets import (
    AGG_MODES,
    LOCAL_AGG_MODES,
    METHODS,
    PARTS,
    PRESETS,
)
from siren_verl.methods.validate import check_bool, check_choice, check_int, check_real

ROOT = "entropy_control"
DIFFICULTY = ("linear", "threshold", "none")
PAR_SCHEDULES = tuple(LAMBDA_SCHEDULES)


class ConfigError(ValueError):
    """A bad `entropy_control` setting, or one of the trainer's settings the method cannot run with
    (siren_verl/verl_glue/settings.py); the message names the full key."""


# ---------------------------------------------------------------------------------------------
# checks: every message is "<full key>=<value>: must be ..."
# ---------------------------------------------------------------------------------------------
_real = partial(check_real, error=ConfigError)
_int = partial(check_int, error=ConfigError)
_bool = partial(check_bool, error=ConfigError)
_choice = partial(check_choice, error=ConfigError)


def _check_keys(key: str, given: Mapping, allowed: set[str]) -> None:
    """Unknown keys (e.g. `+entropy_control.topp=0.9`, which Hydra lets through) are named with the
    closest valid key and the list of valid keys."""
    unknown = sorted(str(k) for k in set(given) - allowed)
    if unknown:
        names = ", ".join(f"{key}.{k}" for k in unknown)
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.6)
            if close:
                hints.append(f"{key}.{close[0]}")
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise ConfigError(f"unknown key(s) {names}{hint}: allowed keys under {key} are {', '.join(sorted(allowed))}")


# ---------------------------------------------------------------------------------------------
# sub-groups
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AERConfig:
    """docs/methods.md §4 (inferred). Each component switchable on its own."""

    anchored_target: bool = True  # H* = rho_target * H_0 (else the fixed `target`)
    rho_target: float = 0.5
    target: float | None = None  # fixed H* (nats) when anchored_target is false
    dynamic_coef: bool = True  # α_{k+1} = clip(α_k + η(H* − H_k), 0, α_max) (else α ≡ alpha0)
    alpha0: float = 0.0
    eta: float = 0.01
    alpha_max: float = 0.05
    difficulty: str = "linear"  # linear: w = 1 − acc; threshold: w = 1[acc ≤ rho_hard]; none: w = 1
    rho_hard: float = 0.5

    @classmethod
    def parse(cls, key: str, raw: Mapping) -> AERConfig:
        _check_keys(key, raw, {f.name for f in fields(cls)})
        d = {**asdict(cls()), **raw}
        alpha_max = _real(f"{key}.alpha_max", d["alpha_max"], low=0.0)
        cfg = cls(
            anchored_target=_bool(f"{key}.anchored_target", d["anchored_target"]),
            rho_target=_real(f"{key}.rho_target", d["rho_target"], low=0.0),
            target=_real(f"{key}.target", d["target"], low=0.0, allow_none=True),
            dynamic_coef=_bool(f"{key}.dynamic_coef", d["dynamic_coef"]),
            alpha0=_real(f"{key}.alpha0", d["alpha0"], low=0.0, high=alpha_max),
            eta=_real(f"{key}.eta", d["eta"], low=0.0),
            alpha_max=alpha_max,
            difficulty=_choice(f"{key}.difficulty", d["difficulty"], DIFFICULTY),
            rho_hard=_real(f"{key}.rho_hard", d["rho_hard"], low=0.0, high=1.0, high_open=True),
        )
        return cfg


@dataclass(frozen=True)
class PARConfig:
    """docs/methods.md §5: λ schedules."""

    schedule: str = "entropy_guided"
    lambda0: float = 0.0  # entropy_guided: λ_0
    delta: float = 0.2  # entropy_guided: entropy threshold δ (nats)
    step: float = 0.05  # entropy_guided: Δ
    value: float = 0.0  # constant: λ

    @classmethod
    def parse(cls, key: str, raw: Mapping) -> PARConfig:
        _check_keys(key, raw, {f.name for f in fields(cls)})
        d = {**asdict(cls()), **raw}
        return cls(
            schedule=_choice(f"{key}.schedule", d["schedule"], PAR_SCHEDULES),
            lambda0=_real(f"{key}.lambda0", d["lambda0"], low=0.0, high=1.0),
            delta=_real(f"{key}.delta", d["delta"], low=0.0),
            step=_real(f"{key}.step", d["step"], low=0.0, high=1.0),
            value=_real(f"{key}.value", d["value"], low=0.0, high=1.0),
        )


@dataclass(frozen=True)
class AdaptiveTargetConfig:
    """docs/methods.md §6 adaptive_target: c_{k+1} = max(0, c_k + Δ·sign(H* − H_k)), applied while H_k ≤ H*."""

    c0: float = 0.0
    delta: float = 0.005
    target: float | None = 0.2  # H* (nats); null: anchor_ratio · H_0
    anchor_ratio: float | None = None

    @classmethod
    def parse(cls, key: str, raw: Mapping) -> AdaptiveTargetConfig:
        _check_keys(key, raw, {f.name for f in fields(cls)})
        d = {**asdict(cls()), **raw}
        cfg = cls(
            c0=_real(f"{key}.c0", d["c0"], low=0.0),
            delta=_real(f"{key}.delta", d["delta"], low=0.0),
            target=_real(f"{key}.target", d["target"], low=0.0, allow_none=True),
            anchor_ratio=_real(f"{key}.anchor_ratio", d["anchor_ratio"], low=0.0, allow_none=True),
        )
        if (cfg.target is None) == (cfg.anchor_ratio is None):
            raise ConfigError(
                f"{key}.target={cfg.target!r}, {key}.anchor_ratio={cfg.anchor_ratio!r}: "
                "set exactly one (a fixed H* in nats, or H* = anchor_ratio * H_0)"
            )
        return cfg


@dataclass(frozen=True)
class EntropyAdvConfig:
    """docs/methods.md §6 entropy_adv: A ← A + min(alpha·H, |A|/kappa)."""

    alpha: float = 0.4
    kappa: float = 2.0

    @classmethod
    def parse(cls, key: str, raw: Mapping) -> EntropyAdvConfig:
        _check_keys(key, raw, {f.name for f in fields(cls)})
        d = {**asdict(cls()), **raw}
        return cls(
            alpha=_real(f"{key}.alpha", d["alpha"], low=0.0),
            kappa=_real(f"{key}.kappa", d["kappa"], low=0.0, low_open=True),
        )


@dataclass(frozen=True)
class ForkingTokensConfig:
    """docs/methods.md §6 forking_tokens / token_selection=batch_top: the top-rho fraction of the batch."""

    rho: float = 0.2

    @classmethod
    def parse(cls, key: str, raw: Mapping) -> ForkingTokensConfig:
        _check_keys(key, raw, {f.name for f in fields(cls)})
        d = {**asdict(cls()), **raw}
        return cls(rho=_real(f"{key}.rho", d["rho"], low=0.0, high=1.0, low_open=True))


@dataclass(frozen=True)
class ForkingReportConfig:
    """High-entropy ("forking") token report, written by siren_verl.viz.tokens (0 = off)."""

    every_n_steps: int = 0
    top_n: int = 20
    context: int = 8

    @classmethod
    def parse(cls, key: str, raw: Mapping) -> ForkingReportConfig:
        _check_keys(key, raw, {f.name for f in fields(cls)})
        d = {**asdict(cls()), **raw}
        return cls(
            every_n_steps=_int(f"{key}.every_n_steps", d["every_n_steps"], low=0),
            top_n=_int(f"{key}.top_n", d["top_n"], low=1),
            context=_int(f"{key}.context", d["context"], low=0),
        )


_SUBGROUPS = {
    "aer": AERConfig,
    "par": PARConfig,
    "adaptive_target": AdaptiveTargetConfig,
    "entropy_adv": EntropyAdvConfig,
    "forking_tokens": ForkingTokensConfig,
    "forking_report": ForkingReportConfig,
}
ABLATIONS = ("without_top_p", "without_peak_mask", "without_anchor", "token_first")


# ---------------------------------------------------------------------------------------------
# the group
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EntropyControlConfig:
    """`entropy_control` as written by the user (parts / coef / agg_mode None = the preset's)."""

    method: str = "none"
    # parts (docs/methods.md §6); None = the preset's value (see siren_verl.methods.presets)
    entropy_measure: str | None = None
    selection_measure: str | None = None
    token_selection: str | None = None
    regularizer: str | None = None
    coef_schedule: str | None = None
    token_weighting: str | None = None
    advantage_shaping: str | None = None
    pg_token_selection: str | None = None
    policy_loss: str | None = None
    # numbers
    coef: float | None = None  # β / c; None = the preset's default
    top_p: float = 0.8  # docs/methods.md §1
    boundary: str = "exclusive"  # docs/methods.md §1
    peak_quantile: float = 0.8  # docs/methods.md §2 q
    peak_upper_quantile: float | None = None  # docs/methods.md §2 q_hi
    anchor: float | None = None  # docs/methods.md §3 H_0 fixed (None: measured at the first step)
    agg_mode: str | None = None  # aggregation of the regularised entropy; None = the preset's
    chunk_size: int | None = None  # tokens per chunk of the nucleus-entropy kernel
    correct_threshold: float = 0.5  # a response is "correct" when its reward >= this (§4.3, §8)
    # docs/methods.md §3 ablations (shortcuts over the parts)
    without_top_p: bool = False
    without_peak_mask: bool = False
    without_anchor: bool = False
    token_first: bool = False
    # per-method sub-groups
    aer: AERConfig = field(default_factory=AERConfig)
    par: PARConfig = field(default_factory=PARConfig)
    adaptive_target: AdaptiveTargetConfig = field(default_factory=AdaptiveTargetConfig)
    entropy_adv: EntropyAdvConfig = field(default_factory=EntropyAdvConfig)
    forking_tokens: ForkingTokensConfig = field(default_factory=ForkingTokensConfig)
    forking_report: ForkingReportConfig = field(default_factory=ForkingReportConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_entropy_control(raw: Mapping | None, key: str = ROOT) -> EntropyControlConfig:
    """Validate a plain mapping (the Hydra node as a dict) into an EntropyControlConfig."""
    raw = dict(raw or {})
    allowed = {f.name for f in fields(EntropyControlConfig)}
    _check_keys(key, raw, allowed)
    k = lambda name: f"{key}.{name}"  # noqa: E731
    d = {**{f.name: getattr(EntropyControlConfig(), f.name) for f in fields(EntropyControlConfig)}, **raw}

    method = d["method"]
    if method not in METHODS:
        raise ConfigError(f"{k('method')}={method!r}: unknown method; must be one of {', '.join(METHODS)}")
    parts = {name: _choice(k(name), d[name], PARTS[name], allow_none=True) for name in PARTS}
    peak_quantile = _real(k("peak_quantile"), d["peak_quantile"], low=0.0, high=1.0, high_open=True)
    upper = _real(k("peak_upper_quantile"), d["peak_upper_quantile"], low=0.0, high=1.0, allow_none=True)
    if upper is not None and upper <= peak_quantile:
        raise ConfigError(
            f"{k('peak_upper_quantile')}={upper!r}: must be null or in ({peak_quantile!r}, 1] "
            f"(above {k('peak_quantile')})"
        )
    subgroups = {}
    for name, cls in _SUBGROUPS.items():
        sub = d[name]
        if isinstance(sub, cls):
            subgroups[name] = sub
            continue
        if sub is None:
            sub = {}
        if not isinstance(sub, Mapping):
            raise ConfigError(f"{k(name)}={sub!r}: must be a group of keys ({', '.join(f.name for f in fields(cls))})")
        subgroups[name] = cls.parse(k(name), sub)
    return EntropyControlConfig(
        method=method,
        **parts,
        coef=_real(k("coef"), d["coef"], low=0.0, allow_none=True),
        top_p=_real(k("top_p"), d["top_p"], low=0.0, high=1.0, low_open=True),
        boundary=_choice(k("boundary"), d["boundary"], BOUNDARIES),
        peak_quantile=peak_quantile,
        peak_upper_quantile=upper,
        anchor=_real(k("anchor"), d["anchor"], low=0.0, allow_none=True),
        agg_mode=_choice(k("agg_mode"), d["agg_mode"], AGG_MODES, allow_none=True),
        chunk_size=_int(k("chunk_size"), d["chunk_size"], low=1, allow_none=True),
        correct_threshold=_real(k("correct_threshold"), d["correct_threshold"]),
        **{name: _bool(k(name), d[name]) for name in ABLATIONS},
        **subgroups,
    )


# ---------------------------------------------------------------------------------------------
# resolution: preset + ablations + explicit parts -> MethodSpec
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodSpec:
    """A resolved method: every part decided, the numbers it uses, the raw config kept."""

    method: str
    parts: dict[str, str]
    coef: float
    agg_mode: str  # may be "pg": the policy-gradient loss's own aggregation (resolved in the glue)
    config: EntropyControlConfig

    @property
    def needs_nucleus(self) -> bool:
        """The forward pass must compute nucleus entropies (regulariser or selection uses them)."""
        if self.parts["regularizer"] == "none":
            return False
        return "nucleus" in (self.parts["entropy_measure"], self.parts["selection_measure"])

    @property
    def needs_loss(self) -> bool:
        """The method adds a regulariser term to the policy-gradient loss (the workers' loss is replaced)."""
        return self.parts["regularizer"] != "none"

    @property
    def needs_siren_trainer(self) -> bool:
        """Needs the driver-side step hooks: a regulariser, token weights, advantage shaping or a PG token
        selection (anything beyond a plain policy loss)."""
        p = self.parts
        return (
            self.needs_loss
            or p["token_weighting"] != "none"
            or p["advantage_shaping"] != "none"
            or p["pg_token_selection"] != "all"
        )

    @property
    def needs_anchor(self) -> bool:
        """The regulariser itself uses H_0 (the anchored square), per the table in parts/regularizers.py."""
        form = REGULARIZERS.get(self.parts["regularizer"])
        return form is not None and form.uses_anchor

    @property
    def uses_anchor(self) -> bool:
        """The method has an H_0 at all: its regulariser's, or its coefficient schedule's anchored target."""
        if self.parts["regularizer"] == "none":
            return False
        return self.needs_anchor or COEF_SCHEDULES[self.parts["coef_schedule"]].uses_anchor(self.config)

    @property
    def needs_logits_hook(self) -> bool:
        """Needs the engine subclass (nucleus entropies or the full entropy with grad from logits)."""
        return self.needs_loss

    def summary(self) -> str:
        parts = ", ".join(f"{k}={v}" for k, v in self.parts.items())
        return f"{self.method}: {parts}, coef={self.coef}, agg_mode={self.agg_mode}"


# ablation -> (part, value it sets, the part/value it requires)
_ABLATION_RULES = {
    "without_top_p": ({"entropy_measure": "full", "selection_measure": "full"}, ("entropy_measure", "nucleus")),
    "token_first": ({"selection_measure": "full"}, ("entropy_measure", "nucleus")),
    "without_peak_mask": ({"token_selection": "all"}, ("token_selection", "peak")),
    "without_anchor": ({"regularizer": "bonus"}, ("regularizer", "anchored_square")),
}


def resolve(cfg: EntropyControlConfig, key: str = ROOT) -> MethodSpec:
    """Preset parts, then the docs/methods.md §3 ablation switches, then explicit part overrides; then the
    combination checks. Raises ConfigError naming the keys involved."""
    preset = PRESETS[cfg.method]
    parts = dict(preset.parts)
    explicit = {name: getattr(cfg, name) for name in PARTS if getattr(cfg, name) is not None}
    parts.update(explicit)

    if cfg.without_top_p and cfg.token_first:
        raise ConfigError(
            f"{key}.without_top_p=true and {key}.token_first=true: choose one "
            "(without_top_p regularises the full entropy, token_first the nucleus entropy)"
        )
    for ablation, (sets, (req_part, req_value)) in _ABLATION_RULES.items():
        if not getattr(cfg, ablation):
            continue
        if parts[req_part] != req_value:
            raise ConfigError(
                f"{key}.{ablation}=true: needs {key}.{req_part}={req_value} "
                f"(method {cfg.method!r} resolves it to {parts[req_part]!r})"
            )
        for part, value in sets.items():
            if part in explicit and explicit[part] != value:
                raise ConfigError(
                    f"{key}.{ablation}=true sets {key}.{part}={value}, "
                    f"which contradicts {key}.{part}={explicit[part]}"
                )
        parts.update(sets)
    if "selection_measure" not in explicit and not (cfg.without_top_p or cfg.token_first):
        # by default a method ranks tokens by the entropy it regularises
        parts["selection_measure"] = parts["entropy_measure"]

    coef = preset.coef if cfg.coef is None else cfg.coef
    agg_mode = preset.agg_mode if cfg.agg_mode is None else cfg.agg_mode
    _check_combination(cfg, parts, agg_mode, key)
    spec = MethodSpec(method=cfg.method, parts=parts, coef=coef, agg_mode=agg_mode, config=cfg)
    _check_anchor(spec, key)
    return spec


def _check_combination(cfg: EntropyControlConfig, parts: dict[str, str], agg_mode: str, key: str) -> None:
    reg, sched = parts["regularizer"], parts["coef_schedule"]

    def origin(part: str) -> str:
        """`entropy_control.<part>=<value>`, saying where a value the user did not set comes from."""
        text = f"{key}.{part}={parts[part]}"
        return text if getattr(cfg, part) is not None else f"{text} (method {cfg.method!r}'s default)"

    form = REGULARIZERS.get(reg)  # the table in parts/regularizers.py; None: regularizer=none
    if form is not None and sched not in form.coef_schedules:
        drivers = [name for name, f in REGULARIZERS.items() if sched in f.coef_schedules]
        raise ConfigError(
            f"{origin('coef_schedule')}: needs regularizer={' or '.join(drivers) or 'none'}; "
            f"{origin('regularizer')}: needs coef_schedule={' or '.join(form.coef_schedules)}"
        )
    if form is None and sched != "constant":
        raise ConfigError(f"{origin('coef_schedule')}: drives a regulariser's coefficient, but regularizer=none")
    if form is not None and form.per_micro_batch and agg_mode not in LOCAL_AGG_MODES:
        local = " or ".join(LOCAL_AGG_MODES)
        if cfg.agg_mode is not None:
            raise ConfigError(
                f"{key}.agg_mode={agg_mode}: with regularizer={reg} H̄ is aggregated per micro-batch; "
                f"must be {local}"
            )
        raise ConfigError(
            f"{origin('regularizer')}: aggregates H̄ per micro-batch, but method {cfg.method!r} aggregates "
            f"with agg_mode={agg_mode} (its default); set {key}.agg_mode={LOCAL_AGG_MODES[0]} (SIREN's) "
            f"or {LOCAL_AGG_MODES[1]}"
        )
    if sched == "aer" and not cfg.aer.anchored_target and cfg.aer.target is None:
        raise ConfigError(
            f"{key}.aer.anchored_target=false: then {key}.aer.target (a fixed H* in nats) must be set"
        )
    if reg == "none" and (cfg.coef is not None and cfg.coef != 0.0):
        raise ConfigError(f"{key}.coef={cfg.coef}: method {cfg.method!r} has no entropy regulariser (regularizer=none)")
    if reg != "none" and sched == "constant" and cfg.coef is None and PRESETS[cfg.method].parts["regularizer"] == "none":
        raise ConfigError(
            f"{key}.regularizer={reg}: set {key}.coef (method {cfg.method!r} has no default coefficient)"
        )
    if parts["token_selection"] == "batch_top" and reg == "none":
        raise ConfigError(
            f"{key}.token_selection=batch_top: selects the regulariser's tokens but regularizer=none; "
            f"for the PG loss use {key}.pg_token_selection=batch_top"
        )


def _check_anchor(spec: MethodSpec, key: str) -> None:
    """A fixed `anchor` must be one the method uses (else it would be silently ignored)."""
    cfg = spec.config
    if cfg.anchor is None or spec.uses_anchor:
        return
    if cfg.without_anchor:
        raise ConfigError(
            f"{key}.without_anchor=true and {key}.anchor={cfg.anchor}: contradictory (without_anchor drops "
            f"H_0 from the loss: L_PG − β·H̄); remove {key}.anchor, or set {key}.without_anchor=false to "
            "regularise towards it"
        )
    raise ConfigError(
        f"{key}.anchor={cfg.anchor}: method {cfg.method!r} (regularizer={spec.parts['regularizer']}, "
        f"coef_schedule={spec.parts['coef_schedule']}) has no anchor H_0; remove {key}.anchor"
    )
