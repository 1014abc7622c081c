"""The shape of the code base: the engine never imports Streamlit; the page's views are one table."""

import ast
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bnviz

ROOT = Path(__file__).resolve().parents[1]


def bnviz_modules():
    found = pkgutil.walk_packages(bnviz.__path__, "bnviz.")
    return sorted(m.name for m in found if not m.name.endswith("__main__"))


def test_no_bnviz_module_imports_streamlit():
    modules = bnviz_modules()
    assert {"bnviz.live.engine", "bnviz.pictures.figures", "bnviz.norms.batchnorm", "bnviz.live.snapshot"} <= set(
        modules
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'streamlit' or m.startswith('streamlit.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"bnviz imported Streamlit: {out.stdout}"


def test_the_check_would_see_streamlit_if_it_were_imported():
    code = "import sys, streamlit\nprint('streamlit' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True"


def test_every_view_has_the_same_render_signature():
    import inspect

    from ui.views import VIEWS

    # the README names the keys that pick the views and the first and last view, in the picker's order
    keys = re.search(r"\*\*Keys 1-(\d+)\*\* pick the views \((.+?) … (.+?)\)", (ROOT / "README.md").read_text())
    assert keys, "README.md no longer says which keys pick the views"
    names = list(VIEWS)
    assert (int(keys[1]), keys[2], keys[3]) == (len(names), names[0], names[-1])
    assert len(set(names)) == len(names) >= 2
    for name, render in VIEWS.items():
        assert list(inspect.signature(render).parameters) == ["snap", "ctx"], name


def test_the_dashboard_entry_is_a_router():
    """dashboard.py sets the page up and hands it to ui.page.run(): it defines nothing and draws no view itself."""
    tree = ast.parse((ROOT / "dashboard.py").read_text())
    defined = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert not defined, [n.name for n in defined]
    assert not any(isinstance(n, (ast.If, ast.For, ast.While, ast.With, ast.Try)) for n in tree.body)
    last = tree.body[-1]
    assert isinstance(last, ast.Expr) and ast.unparse(last.value) == "page.run()"


@pytest.mark.slow  # child processes or large memory: several seconds
def test_a_missing_input_skips_here_and_fails_in_ci(tmp_path):
    """conftest.missing(): without BNVIZ_REQUIRE_ALL a test whose input is absent skips, in CI it fails."""
    import os

    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_needs_input.py").write_text(
        "from conftest import missing\n\ndef test_it():\n    missing('the input is not on this machine')\n"
    )
    base = {k: v for k, v in os.environ.items() if k != "BNVIZ_REQUIRE_ALL"}
    for require, code, word in (("", 0, "1 skipped"), ("1", 1, "1 failed")):
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
            cwd=tmp_path,
            env={**base, "BNVIZ_REQUIRE_ALL": require},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == code and word in out.stdout, out.stdout[-1500:]
        assert "the input is not on this machine" in out.stdout
