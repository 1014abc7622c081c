"""bnviz: see Batch Normalization work. The engine; the Streamlit page lives in dashboard.py."""

from bnviz.norms.batchnorm import BatchNorm, batch_norm
from bnviz.step.models import BNLeNet, BNLeNetScratch, ChapterLeNet, PlainLeNet, build_lenet

__all__ = ["BatchNorm", "batch_norm", "build_lenet", "PlainLeNet", "BNLeNetScratch", "BNLeNet", "ChapterLeNet"]
__version__ = "0.1.0"
