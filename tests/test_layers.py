"""Imports point one way: a module imports only from its own layer or the layers below it,
the imports at run time form no cycle, and no module outside a package imports a private
(``_name``) from it.

The layers, lowest first. Every import that runs counts, the lazy ones inside functions too;
imports under ``if TYPE_CHECKING:`` are for the type checker only and do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "layersal"
LAYERS: list[set[str]] = [
    {"errors", "families", "decoding", "outputs", "targets", "version", "report.progress"}
    | {"entities"},
    {"explanation", "encoding", "inputs", "datasets", "metrics", "rationales", "rules", "words"}
    | {"tasks", "shapley", "similarity", "soft_erasure", "ceilings"}
    # the card an Explanation shows itself as in Jupyter, and how it says it was made: data
    # types only
    | {"report.html", "report.provenance"},
    {"checkpoints", "lm_heads", "models", "passes", "randomise", "sharing"},
    {"evaluate", "windows"},
    {"saliency", "saliency.base", "saliency._common", "saliency.dls", "saliency.layer_choice"}
    | {f"saliency.auto_{m}" for m in ("configs", "race", "store")}
    | {"saliency.dls_method"}
    | {f"saliency.{m}" for m in ("attention", "gradients", "perturbation", "simple")}
    | {"saliency.shapley_budget", "saliency.sequential_ig"},
    {"api", "benchmark", "job", "rows", "budget_choice", "sanity", "agreement"},
    {
        "engines",
        "engines.sink",
        "engines.work",
        "engines.local",
        "engines.ray",
        "engines.blocks",
        "engines.store",
    }
    | {f"report.{m}" for m in ("bench", "plots", "terminal")}
    | {"report"},
    {
        "serve",
        "serve.app",
        "serve.card",
        "serve.runner",
        "serve.stalls",
        "serve.schemas",
        "cli",
        "cli.common",
        "cli.explain",
        "cli.bench",
        "cli.serve",
        "cli.dataset",
        "__main__",
        "__init__",
    },
]


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every relative import of layersal modules in ``path``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    package = parts[:-1]  # the package the file is in (for __init__.py: its own)
    out = []
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names = [alias.name for alias in node.names]
            if not node.module:  # from . import x: module x, or a name of the package itself
                for n in names:
                    module = PACKAGE.joinpath(*base, n)
                    if module.with_suffix(".py").is_file() or (module / "__init__.py").is_file():
                        out.append((".".join([*base, n]), []))
                    else:
                        out.append((".".join(base) or "__init__", [n]))
            else:
                out.append((target or "__init__", names))
    return out


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    return [n for n in ast.walk(tree) if id(n) not in skipped]


def _layer(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        if module in layer:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def test_every_import_points_down_or_sideways():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _name(path)
        for target, _ in _imports(path):
            if target not in {m for layer in LAYERS for m in layer} and "." in target:
                target = target.rsplit(".", 1)[0]  # from .x import y where y is a function
            if _layer(target) > _layer(module):
                upward.append(f"{module} -> {target}")
    assert not upward, f"imports that point up a layer: {upward}"


def test_no_module_reaches_into_anothers_private_names():
    reaching = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _name(path)
        for target, names in _imports(path):
            outside = target.split(".")[0] != module.split(".")[0]
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if outside and private:
                reaching.append(f"{module} -> {target}.{private[0]}")
    assert not reaching, f"private names used outside their package: {reaching}"


def _graph() -> dict[str, set[str]]:
    """Which layersal modules each one imports when it runs (a package's ``__init__`` is
    left out as a target: importing a submodule runs it first, not the other way round)."""
    known = {m for layer in LAYERS for m in layer}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = _name(path)
        targets = set()
        for target, _ in _imports(path):
            if target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != module and target in known:
                targets.add(target)
        graph[module] = targets
    return graph


def test_imports_at_run_time_form_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"
