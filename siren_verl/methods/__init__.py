"""Entropy-control methods as presets over parts (docs/methods.md §3-§6): config schema and validation, the
presets table, the driver-side controller, the per-micro-batch loss term, step statistics.
Pure python/torch, no verl import (the verl side lives in siren_verl.verl_glue)."""
