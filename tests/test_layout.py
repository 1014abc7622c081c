"""The house in wings: bnviz/ is grouped by what a reader comes for, and the wings stack.

Read from the source (every import, at the top of a module or inside a function): no import circle between
modules, no private name (``_x``) taken from another module, and no wing importing a wing above it. The page
(``ui/``) and the command line (``bnviz/cli.py``) are the roof: nothing in the wings imports them.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WINGS = ("machine", "norms", "data", "step", "live", "pictures", "devices", "studies")  # bottom to top
ROOF = ("bnviz.cli", "bnviz.__main__", "bnviz.__init__")


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1 and parts[0] != "bnviz" or parts[-1] == "__init__" and len(parts) > 2:
        parts = parts[:-1]
    return ".".join(parts)


def sources():
    files = sorted((ROOT / "bnviz").rglob("*.py")) + sorted((ROOT / "ui").rglob("*.py"))
    return {module_name(p): p for p in files}


def imports(path, name):
    """(imported module, imported names) for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, tuple(alias.name for alias in node.names)))
    return found


def graph():
    mods = sources()
    edges = {}
    for name, path in mods.items():
        targets = set()
        for module, names in imports(path, name):
            for candidate in [f"{module}.{n}" for n in names] + [module]:
                if candidate in mods and candidate != name:
                    targets.add(candidate)
                    break
            else:
                continue
        edges[name] = targets
    return mods, edges


def wing_of(name):
    parts = name.split(".")
    if parts[0] == "ui" or name in ROOF:
        return len(WINGS)  # the roof
    return WINGS.index(parts[1]) if len(parts) >= 2 and parts[1] in WINGS else None


def test_every_bnviz_module_lives_in_a_wing():
    mods = sources()
    loose = [n for n in mods if n.startswith("bnviz.") and n not in ROOF and wing_of(n) is None]
    assert not loose, f"modules outside the wings: {loose}"
    assert {
        n.split(".")[1] for n in mods if wing_of(n) is not None and n.startswith("bnviz.") and n not in ROOF
    } == set(WINGS)


def test_the_wings_stack():
    mods, edges = graph()
    upward = [
        f"{a} -> {b}"
        for a, targets in edges.items()
        for b in targets
        if a.startswith("bnviz.") and wing_of(a) is not None and wing_of(b) is not None and wing_of(b) > wing_of(a)
    ]
    assert not upward, "a wing imports a wing above it:\n" + "\n".join(sorted(upward))


def test_no_import_circle():
    mods, edges = graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_name_taken_from_another_module():
    mods = sources()
    taken = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> our module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    ours = (node.module or "").split(".")[0] in ("bnviz", "ui") or node.level
                    if ours and alias.name.startswith("_") and not alias.name.startswith("__"):
                        taken.append(f"{name}: from {node.module} import {alias.name}")
                    full = f"{node.module}.{alias.name}"
                    if full in mods:
                        aliases[alias.asname or alias.name] = full
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                taken.append(f"{name}: {node.value.id}.{node.attr}")
    assert not taken, "private names used across modules:\n" + "\n".join(taken)


@pytest.mark.parametrize("wing", WINGS)
def test_each_wing_says_what_lives_there_and_what_it_may_import(wing):
    doc = ast.get_docstring(ast.parse((ROOT / "bnviz" / wing / "__init__.py").read_text()))
    assert doc and "import" in doc.lower(), f"bnviz/{wing}/__init__.py: say what lives there and what it may import"


def test_the_graph_is_read_from_real_imports():
    """The checks above walk real edges (a graph that came out empty would pass them all)."""
    mods, edges = graph()
    assert "bnviz.live.engine" in edges["bnviz.live.experiment_process"]
    assert "bnviz.step.models" in edges["bnviz.live.snapshot"]
    assert wing_of("bnviz.step.models") < wing_of("bnviz.live.engine") < wing_of("ui.page")
