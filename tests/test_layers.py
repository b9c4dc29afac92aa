"""The layer rule of docs/DESIGN.md: a layer imports only from the layers below it. Checked on the import
statements themselves (the AST, so lazy imports inside functions count too)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "invlab"
# the layers above each one: what it must never import
ABOVE = {layer: ("train", "engine", "cli", "analysis") for layer in ("data", "ops", "nets", "priors", "solvers")}
# Triton kernels sit below ops (which picks them): they import no other part of invlab
ABOVE["kernels"] = ("data", "ops", "nets", "priors", "solvers", "train", "engine", "cli", "analysis", "utils")


def invlab_imports(path: Path) -> set[str]:
    """The invlab subpackages a module imports (`invlab.x.y` -> `x`), relative imports resolved."""
    tree, found = ast.parse(path.read_text(encoding="utf-8")), set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] if node.level == 0 else [f"invlab.{path.parent.name}.{node.module}"]
        found |= {n.split(".")[1] for n in names if n.startswith("invlab.") and n.count(".") >= 1}
    return found


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_no_layer_imports_a_higher_one(layer):
    bad = {f"{p.relative_to(PKG.parent)} imports invlab.{name}"
           for p in (PKG / layer).rglob("*.py") for name in invlab_imports(p) & set(ABOVE[layer])}
    assert not bad, sorted(bad)


def test_the_check_sees_a_lazy_import(tmp_path):
    """Teeth: an import of a higher layer inside a function body is found."""
    f = tmp_path / "solvers" / "x.py"
    f.parent.mkdir()
    f.write_text("def f():\n    from invlab.train.deq import fixed_point\n    return fixed_point\n")
    assert invlab_imports(f) == {"train"}
