"""BN across k devices: synchronised BN from scratch, per-device statistics, a local process group or
torchrun's, data-parallel training. May import ``machine``, ``norms``, ``data``, ``step``, ``live``."""
