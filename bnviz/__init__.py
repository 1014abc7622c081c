"""bnviz: see Batch Normalization work. The engine; the Streamlit page lives in dashboard.py.

The names below are imported on first use, not with the package: a process that only needs a light module
(the forkserver's guard, ``bnviz.live.forkserver_guard``) does not wait for torch.
"""

import importlib

_HOMES = {
    "BatchNorm": "bnviz.norms.batchnorm",
    "batch_norm": "bnviz.norms.batchnorm",
    "build_lenet": "bnviz.step.models",
    "PlainLeNet": "bnviz.step.models",
    "BNLeNetScratch": "bnviz.step.models",
    "BNLeNet": "bnviz.step.models",
    "ChapterLeNet": "bnviz.step.models",
}
__all__ = list(_HOMES)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'bnviz' has no attribute {name!r}")
