"""The pure maths every non-SIREN method (and SIREN's regulariser) is built from: docs/methods.md §3-§6.

No verl import here or below: the controller (driver) and the loss replacement (workers) plug these
small functions and schedules together. The names below are loaded on first use (PEP 562), so the
config validation can read the tables in `regularizers` / `schedules` without importing torch.
"""

from __future__ import annotations

import importlib

_HOME = {
    "DIFFICULTY_MODES": "difficulty",
    "difficulty_weights": "difficulty",
    "group_accuracy": "difficulty",
    "per_sample_coefficients": "difficulty",
    "REGULARIZERS": "regularizers",
    "Regularizer": "regularizers",
    "anchored_square": "regularizers",
    "bonus": "regularizers",
    "per_token_coefficient_bonus": "regularizers",
    "register_regularizer": "regularizers",
    "AdaptiveTargetCoefficient": "schedules",
    "AERGlobalCoefficient": "schedules",
    "ConstantCoefficient": "schedules",
    "ConstantLambda": "schedules",
    "EntropyGuidedLambda": "schedules",
    "EpochLambda": "schedules",
    "Schedule": "schedules",
    "StageLambda": "schedules",
    "initial_anchored_target": "schedules",
    "entropy_advantage_shaping": "shaping",
    "combine_token_weights": "weighting",
    "positive_advantage_weights": "weighting",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME))
