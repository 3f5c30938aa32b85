"""Imported by the judge pool's fork server only (never by the parent): imports math-verify/sympy
and runs the warm-up judgements once, so every forked worker starts warm (see pool.py)."""

from siren_verl.reward._worker import warm_up

warm_up()
