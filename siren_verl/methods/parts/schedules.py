"""Driver-side coefficient schedules (docs/methods.md §4.1, §4.2, §5, §6 `adaptive_target`).

Pure python, no torch / verl: every value is a python float, every ``state_dict()`` is a dict of
plain JSON types (``{"kind": str, "value": float}`` or ``{"kind": str}``) that ``load_state_dict``
restores bit-identically (python floats survive ``json.dumps``/``json.loads`` exactly).

Uniform interface (what the controller holds)
---------------------------------------------
Every schedule implements ``observe(*, entropy=None, step=None, epoch=None, target=None) -> float``,
called ONCE per training step on the driver after the old-log-prob pass, with

* ``entropy`` — H_k, that step's token-mean full entropy over the whole global batch (nats);
* ``step``    — 0-based index of the training step (verl's ``trainer.global_steps - 1``);
* ``epoch``   — 0-based epoch index (verl's ``epoch`` loop variable);
* ``target``  — H*, when the schedule has no fixed target of its own (e.g. ``rho_target * H_0``).

It returns the value to use in THAT step's loss and advances the internal state to the next step.
A schedule ignores the arguments it does not need and raises ValueError when one it needs is
missing.

Step indexing of the recurrences (our reading of docs/methods.md §4.2 / §5 / §6): the value used in the loss
of step k is x_k; that step's entropy H_k then produces x_{k+1} for step k+1. So ``observe`` returns
the value held BEFORE the update (``.value`` before the call) and ``.value`` afterwards is x_{k+1}.
The first step therefore uses the initial value (alpha0, c0, lambda0). For ``adaptive_target`` the
step's own H_k also gates the bonus (see ``AdaptiveTargetCoefficient.effective``).

Recurrent schedules additionally expose ``.value`` (x_k, the value for the next observed step) and
``.update(entropy, ...) -> float`` (the bare recurrence: advance once, return x_{k+1}).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from siren_verl.methods.validate import check_int, check_real

__all__ = [
    "COEF_SCHEDULES",
    "LAMBDA_SCHEDULES",
    "CoefficientSchedule",
    "register_coef_schedule",
    "Schedule",
    "initial_anchored_target",
    "ConstantCoefficient",
    "AERGlobalCoefficient",
    "AdaptiveTargetCoefficient",
    "EntropyGuidedLambda",
    "StageLambda",
    "EpochLambda",
    "ConstantLambda",
]


def initial_anchored_target(anchor_entropy: float, rho_target: float = 0.5) -> float:
    """docs/methods.md §4.1: H* = rho_target * H_0.

    ``anchor_entropy`` is H_0, the token-mean full entropy of the first rollout batch (nats, >= 0);
    ``rho_target`` in [0, inf) (default 0.5: "a moderate range below its initial level").
    """
    h0 = check_real("anchor_entropy", anchor_entropy, low=0.0)
    rho = check_real("rho_target", rho_target, low=0.0)
    return rho * h0


class Schedule(abc.ABC):
    """Common interface of every coefficient / lambda schedule (see the module docstring)."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def observe(
        self,
        *,
        entropy: float | None = None,
        step: int | None = None,
        epoch: int | None = None,
        target: float | None = None,
    ) -> float:
        """Return the value for the loss of the observed step, then advance to the next step."""

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state, expected_keys={"kind"})

    def _check_state(self, state: object, expected_keys: set[str]) -> dict[str, Any]:
        if not isinstance(state, dict):
            raise ValueError(f"{type(self).__name__}.load_state_dict: state must be a dict, got {type(state).__name__}")
        if state.get("kind") != self.kind:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: state['kind']={state.get('kind')!r}: must be {self.kind!r}"
            )
        if set(state) != expected_keys:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: state keys {sorted(state)}: must be {sorted(expected_keys)}"
            )
        return state


class _RecurrentSchedule(Schedule):
    """A schedule whose whole state is one python float ``value`` (x_k)."""

    _value: float

    @property
    def value(self) -> float:
        """x_k: the value the next observed step will use."""
        return self._value

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": float(self._value)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = self._check_state(state, expected_keys={"kind", "value"})
        self._value = self._check_value("state['value']", state["value"])

    @abc.abstractmethod
    def _check_value(self, name: str, value: object) -> float:
        """Validate a (loaded or initial) state value against this schedule's range."""


def _require_entropy(entropy: float | None) -> float:
    if entropy is None:
        raise ValueError("entropy=None: this schedule needs the step's token-mean entropy H_k (a finite number >= 0)")
    return check_real("entropy", entropy, low=0.0)


def _resolve_target(fixed: float | None, passed: float | None) -> float:
    """H*: the schedule's fixed target, or the one passed by the controller (never two different ones)."""
    if passed is None:
        if fixed is None:
            raise ValueError("target=None: this schedule has no fixed target; pass target=H* (a finite number >= 0)")
        return fixed
    value = check_real("target", passed, low=0.0)
    if fixed is not None and value != fixed:
        raise ValueError(f"target={passed!r}: conflicts with the schedule's fixed target {fixed!r}")
    return value


# --------------------------------------------------------------------------------------------------
# coefficients
# --------------------------------------------------------------------------------------------------


class ConstantCoefficient(Schedule):
    """A fixed coefficient (naive bonus beta, SIREN beta): docs/methods.md §3, §6 `naive`. ``value`` in [0, inf)."""

    kind: ClassVar[str] = "constant_coefficient"

    def __init__(self, value: float) -> None:
        self._value = check_real("value", value, low=0.0)

    @property
    def value(self) -> float:
        return self._value

    def observe(self, *, entropy=None, step=None, epoch=None, target=None) -> float:
        return self._value


class AERGlobalCoefficient(_RecurrentSchedule):
    """docs/methods.md §4.2: alpha_{k+1} = clip(alpha_k + eta * (H* - H_k), 0, alpha_max).

    Arguments (ranges): ``alpha0`` in [0, alpha_max]; ``eta`` in [0, inf) (per nat);
    ``alpha_max`` in [0, inf); ``target`` = H* in [0, inf) or None (then the controller passes
    ``target=rho_target * H_0`` to ``observe``/``update``, see ``initial_anchored_target``).
    """

    kind: ClassVar[str] = "aer_global"

    def __init__(
        self, alpha0: float = 0.0, eta: float = 0.01, alpha_max: float = 0.05, target: float | None = None
    ) -> None:
        self.alpha_max = check_real("alpha_max", alpha_max, low=0.0)
        self.eta = check_real("eta", eta, low=0.0)
        self.target = None if target is None else check_real("target", target, low=0.0)
        self._value = self._check_value("alpha0", alpha0)

    def _check_value(self, name: str, value: object) -> float:
        return check_real(name, value, low=0.0, high=self.alpha_max)

    def update(self, entropy: float, target: float | None = None) -> float:
        """Advance once with the step's H_k; return alpha_{k+1}."""
        h_k = _require_entropy(entropy)
        h_star = _resolve_target(self.target, target)
        # docs/methods.md §4.2: clip(alpha_k + eta * (H* - H_k), 0, alpha_max)
        self._value = min(max(self._value + self.eta * (h_star - h_k), 0.0), self.alpha_max)
        return self._value

    def observe(self, *, entropy=None, step=None, epoch=None, target=None) -> float:
        alpha_k = self._value
        self.update(entropy, target)
        return alpha_k


class AdaptiveTargetCoefficient(_RecurrentSchedule):
    """docs/methods.md §6 `adaptive_target` (Skywork-OR1): c_{k+1} = max(0, c_k + delta * sign(H* - H_k)),
    applied only while H_k <= H*.

    Our reading of "applied only while H_k <= H*" (the Skywork-OR1 form alpha_k = c_k * 1{e_k <= tgt}):
    the coefficient in step k's loss is ``effective(H_k) = c_k if H_k <= H* else 0``, where H_k is the
    SAME step's token-mean entropy (measured in its old-log-prob pass, before the update) and c_k the
    value before this step's update. The comparison is inclusive (H_k == H* applies c_k); at
    H_k == H*, sign(0) = 0 leaves c unchanged. ``observe`` returns ``effective(H_k)`` and then
    advances c.

    Arguments (ranges): ``c0`` in [0, inf); ``delta`` in [0, inf); ``target`` = H* in [0, inf) or None
    (None: the controller passes ``target`` each step, e.g. anchored to H_0).
    """

    kind: ClassVar[str] = "adaptive_target"

    def __init__(self, c0: float = 0.0, delta: float = 0.005, target: float | None = 0.2) -> None:
        self.delta = check_real("delta", delta, low=0.0)
        self.target = None if target is None else check_real("target", target, low=0.0)
        self._value = self._check_value("c0", c0)

    def _check_value(self, name: str, value: object) -> float:
        return check_real(name, value, low=0.0)

    def effective(self, entropy: float, target: float | None = None) -> float:
        """The coefficient applied in the loss of a step whose entropy is H_k: c_k if H_k <= H* else 0."""
        h_k = _require_entropy(entropy)
        h_star = _resolve_target(self.target, target)
        return self._value if h_k <= h_star else 0.0

    def update(self, entropy: float, target: float | None = None) -> float:
        """Advance once with the step's H_k; return c_{k+1} = max(0, c_k + delta * sign(H* - H_k))."""
        h_k = _require_entropy(entropy)
        h_star = _resolve_target(self.target, target)
        sign = math.copysign(1.0, h_star - h_k) if h_star != h_k else 0.0
        self._value = max(0.0, self._value + self.delta * sign)
        return self._value

    def observe(self, *, entropy=None, step=None, epoch=None, target=None) -> float:
        applied = self.effective(entropy, target)
        self.update(entropy, target)
        return applied


# --------------------------------------------------------------------------------------------------
# PAR lambda schedules (docs/methods.md §5); every value lies in [0, 1]
# --------------------------------------------------------------------------------------------------


class EntropyGuidedLambda(_RecurrentSchedule):
    """docs/methods.md §5 `entropy_guided`: lambda_{k+1} = clip(lambda_k - step, 0, 1) if H_k < delta
    else clip(lambda_k + step, 0, 1).

    Arguments (ranges): ``lambda0`` in [0, 1]; ``delta`` (the entropy threshold δ, nats) in [0, inf);
    ``step`` (the increment Δ) in [0, 1]. H_k == delta counts as "not below" (lambda grows).
    """

    kind: ClassVar[str] = "entropy_guided_lambda"

    def __init__(self, lambda0: float = 0.0, delta: float = 0.2, step: float = 0.05) -> None:
        self.delta = check_real("delta", delta, low=0.0)
        self.step = check_real("step", step, low=0.0, high=1.0)
        self._value = self._check_value("lambda0", lambda0)

    def _check_value(self, name: str, value: object) -> float:
        return check_real(name, value, low=0.0, high=1.0)

    def update(self, entropy: float) -> float:
        """Advance once with the step's H_k; return lambda_{k+1}."""
        h_k = _require_entropy(entropy)
        moved = self._value - self.step if h_k < self.delta else self._value + self.step
        self._value = min(max(moved, 0.0), 1.0)
        return self._value

    def observe(self, *, entropy=None, step=None, epoch=None, target=None) -> float:
        lambda_k = self._value
        self.update(entropy)
        return lambda_k


class StageLambda(Schedule):
    """docs/methods.md §5 `stage`: lambda = 0 over the first half of training, then linear 0 -> 1 over the second.

    Exact definition, with s the 0-based step index and T = ``total_steps`` (an integer >= 1):
    progress p = s / (T - 1) (p = 0 when T = 1) and lambda(s) = clip(2 p - 1, 0, 1). Hence
    lambda = 0 for every s <= (T - 1) / 2, lambda grows linearly afterwards and reaches exactly 1 at
    the LAST step s = T - 1 (and stays 1 for s >= T - 1, e.g. a resumed run that trains longer).
    A run of a single step (T = 1) uses lambda = 0. Stateless: the state dict holds only its kind.
    """

    kind: ClassVar[str] = "stage_lambda"

    def __init__(self, total_steps: int) -> None:
        self.total_steps = check_int("total_steps", total_steps, low=1)

    def value_at(self, step: int) -> float:
        s = check_int("step", step, low=0)
        if self.total_steps == 1:
            return 0.0
        progress = s / (self.total_steps - 1)
        return min(max(2.0 * progress - 1.0, 0.0), 1.0)

    def observe(self, *, entropy=None, step=None, epoch=None, target=None) -> float:
        if step is None:
            raise ValueError("step=None: StageLambda needs the 0-based training step index (an integer >= 0)")
        return self.value_at(step)


class EpochLambda(Schedule):
    """docs/methods.md §5 `epoch`: lambda = (e - 1) / (E - 1) for epoch e = 1..E.

    With the 0-based epoch index i = e - 1 (verl's loop variable) and E = ``total_epochs`` (>= 1):
    lambda(i) = clip(i / (E - 1), 0, 1), so the first epoch uses 0 and the last uses exactly 1.
    E = 1 (0/0 in the spec's formula) is defined as lambda = 0: the only epoch is the first one.
    Epochs past E - 1 (a resumed run with more epochs) stay at 1. Stateless.
    """

    kind: ClassVar[str] = "epoch_lambda"

    def __init__(self, total_epochs: int) -> None:
        self.total_epochs = check_int("total_epochs", total_epochs, low=1)

    def value_at(self, epoch: int) -> float:
        i = check_int("epoch", epoch, low=0)
        if self.total_epochs == 1:
            return 0.0
        return min(i / (self.total_epochs - 1), 1.0)

    def observe(self, *, entropy=None, step=None, epoch=None, target=None) -> float:
        if epoch is None:
            raise ValueError("epoch=None: EpochLambda needs the 0-based epoch index (an integer >= 0)")
        return self.value_at(epoch)


class ConstantLambda(ConstantCoefficient):
    """docs/methods.md §5 `constant`: a fixed lambda; ``value`` in [0, 1]."""

    kind: ClassVar[str] = "constant_lambda"

    def __init__(self, value: float) -> None:
        self._value = check_real("value", value, low=0.0, high=1.0)


# --------------------------------------------------------------------------------------------------
# the tables the controller and the config read (a new schedule is one entry here)
# --------------------------------------------------------------------------------------------------
# `cfg` below is the validated `entropy_control` group (siren_verl.methods.config.EntropyControlConfig)
# and `coef` the method's resolved constant coefficient; the entries only read their own sub-group.


@dataclass(frozen=True)
class CoefficientSchedule:
    """`entropy_control.coef_schedule=<name>`: how the driver decides a step's coefficient."""

    name: str
    build: Callable[[Any], Schedule | None]  # cfg -> the stateful schedule (None: nothing to advance)
    uses_anchor: Callable[[Any], bool]  # cfg -> whether its target H* is anchored to H_0
    target: Callable[[Any, float | None], float | None]  # (cfg, H_0) -> the step's H* (None: no target)
    # (schedule, cfg, coef, H_k, H*) -> the coefficient of this step's loss (advances the schedule)
    coefficient: Callable[[Schedule | None, Any, float, float, float | None], float]


COEF_SCHEDULES: dict[str, CoefficientSchedule] = {}


def register_coef_schedule(entry: CoefficientSchedule) -> CoefficientSchedule:
    if entry.name in COEF_SCHEDULES:
        raise ValueError(f"coef_schedule {entry.name!r} is already registered")
    COEF_SCHEDULES[entry.name] = entry
    return entry


# the method's fixed coefficient (SIREN β, naive β, docs/methods.md §3 / §6)
register_coef_schedule(
    CoefficientSchedule(
        name="constant",
        build=lambda cfg: None,
        uses_anchor=lambda cfg: False,
        target=lambda cfg, h0: None,
        coefficient=lambda schedule, cfg, coef, h_k, target: float(coef),
    )
)


def _aer_target(cfg, h0: float | None) -> float | None:
    # docs/methods.md §4.1: H* = ρ_target · H_0 (initial-anchored), else the fixed aer.target
    return initial_anchored_target(h0, cfg.aer.rho_target) if cfg.aer.anchored_target else cfg.aer.target


register_coef_schedule(
    CoefficientSchedule(
        name="aer",  # docs/methods.md §4.2; aer.dynamic_coef=false keeps α ≡ aer.alpha0
        build=lambda cfg: (
            AERGlobalCoefficient(alpha0=cfg.aer.alpha0, eta=cfg.aer.eta, alpha_max=cfg.aer.alpha_max, target=None)
            if cfg.aer.dynamic_coef
            else None
        ),
        uses_anchor=lambda cfg: cfg.aer.anchored_target,
        target=_aer_target,
        coefficient=lambda schedule, cfg, coef, h_k, target: float(
            schedule.observe(entropy=h_k, target=target) if schedule is not None else cfg.aer.alpha0
        ),
    )
)


def _adaptive_target(cfg, h0: float | None) -> float:
    # docs/methods.md §6: a fixed H* (nats), or H* = anchor_ratio · H_0 (the same initial-anchored form as §4.1)
    at = cfg.adaptive_target
    return at.target if at.target is not None else initial_anchored_target(h0, at.anchor_ratio)


register_coef_schedule(
    CoefficientSchedule(
        name="adaptive",  # docs/methods.md §6 adaptive_target (Skywork-OR1)
        build=lambda cfg: AdaptiveTargetCoefficient(c0=cfg.adaptive_target.c0, delta=cfg.adaptive_target.delta, target=None),
        uses_anchor=lambda cfg: cfg.adaptive_target.target is None,
        target=_adaptive_target,
        coefficient=lambda schedule, cfg, coef, h_k, target: float(schedule.observe(entropy=h_k, target=target)),
    )
)


def _needs(what: str, value, key: str):
    if value is None:
        raise ValueError(f"entropy_control.par.schedule={key}: needs the run's total {what}")
    return value


# `entropy_control.par.schedule=<name>` -> (cfg.par, total_steps, total_epochs) -> λ schedule (docs/methods.md §5)
LAMBDA_SCHEDULES: dict[str, Callable[[Any, int | None, int | None], Schedule]] = {
    "entropy_guided": lambda par, steps, epochs: EntropyGuidedLambda(lambda0=par.lambda0, delta=par.delta, step=par.step),
    "stage": lambda par, steps, epochs: StageLambda(total_steps=_needs("training steps", steps, "stage")),
    "epoch": lambda par, steps, epochs: EpochLambda(total_epochs=_needs("epochs", epochs, "epoch")),
    "constant": lambda par, steps, epochs: ConstantLambda(value=par.value),
}
