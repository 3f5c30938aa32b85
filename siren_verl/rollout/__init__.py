"""Rollout pieces that need no verl: the sampler of the CPU development backend `rollout.name=hf`
(`sampler.py`); its verl adapters live in `siren_verl/verl_glue/`."""
