"""Viewing tools: `siren-verl plot` (training curves) and `siren-verl tokens` (forking-token report).

Submodules import matplotlib/tensorboard lazily, so importing this package is cheap.
"""
