"""One training step and what it measures: the LeNets (``models``), SGD and the step (``training``), the step as
a CUDA graph (``graphed_step``), the hooks that read activations (``probes``), PreciseBN and the loss landscape.
May import ``machine``, ``norms``, ``data``."""
