"""What the views import on first use, imported with the page instead: before the server freezes what it holds.

When the server starts it collects once and calls ``gc.freeze()`` (ui/server.py), so that the full collection
Streamlit runs after every script run (each viewer's redraw is one) walks only the objects made since. But
``st.dataframe`` imports pandas at its first call, and Plotly imports each part of a figure (axes, legend,
annotations, bars, heat maps) at its first use: about 390 modules, 30,000 objects, loaded after the freeze, that
every later collection walked again (15 ms of CPU per viewer redraw on the 2-core machine, two thirds of it).
``ui.page`` imports this module, so it all loads before the first page runs. tests/test_preload.py checks that
drawing every view imports nothing more.
"""

import importlib

MODULES = (
    "_strptime",
    "dateutil.parser",
    "dateutil.relativedelta",
    "dateutil.tz",
    "narwhals._interchange.dataframe",
    "numpy.ma",
    "numpy.random",
    "numpy.typing",
    "pandas",
    "pyarrow.compute",
    "pyarrow.pandas_compat",
    "pyarrow.vendored.version",
    "pydoc",
    "multiprocessing.popen_forkserver",
    "streamlit.dataframe.lazy_df_adapters",
    "streamlit.material_icon_names",
    "unicodedata",
    "zoneinfo",
    "plotly.animation",
    "plotly.graph_objs._deprecations",
    "plotly.graph_objs.bar",
    "plotly.graph_objs.bar.marker",
    "plotly.graph_objs.heatmap",
    "plotly.graph_objs.heatmap.colorbar",
    "plotly.graph_objs.layout",
    "plotly.graph_objs.layout.annotation",
    "plotly.graph_objs.layout.shape",
    "plotly.graph_objs.layout.title",
    "plotly.graph_objs.layout.xaxis",
    "plotly.graph_objs.layout.yaxis",
    "plotly.graph_objs.scatter",
)
# Plotly's graph objects import their classes on first access (a module __getattr__): the traces the views draw,
# and every class of the other modules named here (a layout's parts, a trace's parts).
TRACES = ("Bar", "Heatmap", "Layout", "Scatter")
EVERY_CLASS = tuple(m for m in MODULES if m.startswith("plotly.graph_objs."))


def load():
    for name in MODULES:
        importlib.import_module(name)
    graph_objs = importlib.import_module("plotly.graph_objs")
    for cls in TRACES:
        getattr(graph_objs, cls)
    for name in EVERY_CLASS:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            if attr[:1].isupper():
                getattr(module, attr)


load()
