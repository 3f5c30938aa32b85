"""The entropy-collapse testbed: the "signed chain" task (Countdown-style search mod 10, several
correct multi-token responses per problem), its rule-based checker
(`siren_verl.testbed.reward.compute_score`) and a base policy warm-started locally on a broad, partly
wrong mix of solutions (pass@1 well below pass@16, moderate entropy on the choice tokens).

`python -m siren_verl.testbed [--dir DIR] [--rebuild] [--tiny] [--print-root]` builds the assets
(a few minutes on 2 cores; cached) and prints their paths and the base policy's statistics.
No verl import in this package: it runs anywhere transformers does.
"""

from .assets import (
    BUILD_VERSION,
    TestbedPaths,
    ensure_testbed_assets,
    prepare_config,
    testbed_paths,
    val_source,
)
from .task import Problem, check_response, make_splits, solutions
from .warmstart import TeacherMix, WarmStartSpec

__all__ = [
    "BUILD_VERSION",
    "Problem",
    "TeacherMix",
    "TestbedPaths",
    "WarmStartSpec",
    "check_response",
    "ensure_testbed_assets",
    "make_splits",
    "prepare_config",
    "solutions",
    "testbed_paths",
    "val_source",
]
