"""ui/preload.py: once the page is imported, drawing any view imports no module more.

The server freezes what it holds when it starts (gc.freeze, ui/server.py); a module imported later is walked by
the full collection Streamlit runs after every script run, each viewer's redraw included. Checked in a fresh
interpreter, on the watch page's way of drawing a view (every view, the shipped run at step 1,500).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import builtins, json, sys

sys.path.insert(0, ".")
from streamlit.testing.v1 import AppTest


def empty():
    import streamlit as st

    st.write("")


AppTest.from_function(empty).run()  # AppTest's own first-use imports
import ui.page  # noqa: F401  (what dashboard.py imports before the first page runs)
from ui.views import VIEWS

builtins._new = {}


def app(view):
    import builtins, sys

    from bnviz.live.replay import Recording
    from ui import views
    from ui.context import ViewContext
    from ui.controls import status_bar
    from ui.server import SHIPPED_RUN

    snap = Recording.load(SHIPPED_RUN).snapshot(1500)
    before = set(sys.modules)
    status_bar(snap, commands=False)
    views.render(view, snap, ViewContext())
    builtins._new[view] = sorted(set(sys.modules) - before)


errors = {}
for view in VIEWS:
    at = AppTest.from_function(app, default_timeout=120, args=(view,)).run()
    errors[view] = [e.value for e in at.exception]
print(json.dumps({"new": builtins._new, "errors": errors}))
"""


@pytest.mark.slow  # child processes or large memory: several seconds
def test_drawing_any_view_imports_nothing_after_the_page_is_imported(tmp_path):
    script = tmp_path / "draw_every_view.py"  # a file: AppTest.from_function reads its function's source
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert not any(result["errors"].values()), result["errors"]
    assert set(result["new"]) == set(result["errors"])  # every view was drawn
    assert result["new"] == {view: [] for view in result["new"]}, result["new"]
