"""The pure maths every non-SIREN method (and SIREN's regulariser) is built from: SPEC §3-§6.

No verl import here or below: the controller (driver) and the loss replacement (workers) plug these
small functions and schedules together.
"""

from .difficulty import DIFFICULTY_MODES, difficulty_weights, group_accuracy, per_sample_coefficients
from .regularizers import anchored_square, bonus, per_token_coefficient_bonus
from .schedules import (
    AdaptiveTargetCoefficient,
    AERGlobalCoefficient,
    ConstantCoefficient,
    ConstantLambda,
    EntropyGuidedLambda,
    EpochLambda,
    Schedule,
    StageLambda,
    initial_anchored_target,
)
from .shaping import entropy_advantage_shaping
from .weighting import combine_token_weights, positive_advantage_weights

__all__ = [
    "DIFFICULTY_MODES",
    "AERGlobalCoefficient",
    "AdaptiveTargetCoefficient",
    "ConstantCoefficient",
    "ConstantLambda",
    "EntropyGuidedLambda",
    "EpochLambda",
    "Schedule",
    "StageLambda",
    "anchored_square",
    "bonus",
    "combine_token_weights",
    "difficulty_weights",
    "entropy_advantage_shaping",
    "group_accuracy",
    "initial_anchored_target",
    "per_sample_coefficients",
    "per_token_coefficient_bonus",
    "positive_advantage_weights",
]
