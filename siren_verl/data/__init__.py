"""Data preparation: math training / evaluation sets -> verl parquet (`siren-verl prepare-data`).

See `siren_verl.data.sources` for the known sets and their default sources.
"""

from siren_verl.data.convert import (
    QWEN_MATH_INSTRUCTION,
    MissingColumnsError,
    convert_rows,
    normalize_ground_truth,
    problem_key,
)
from siren_verl.data.sources import SOURCES, SourceSpec

__all__ = [
    "QWEN_MATH_INSTRUCTION",
    "MissingColumnsError",
    "convert_rows",
    "normalize_ground_truth",
    "problem_key",
    "SOURCES",
    "SourceSpec",
]
