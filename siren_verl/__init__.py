"""siren-verl: entropy control for RLVR training of reasoning models, as a verl 0.9.1 plugin."""

__version__ = "0.1.0"
