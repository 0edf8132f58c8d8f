"""The package's shape: every module imports, modules sit in layers that never import upwards,
no module imports another in a circle (imports inside functions and a package's ``__init__``
included; imports under ``if TYPE_CHECKING:`` are annotations, not dependencies, and don't count),
the trainer names no method, and it offers every attribute of the methods' contract."""
import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jocor_plugin"

# jocor_plugin/__init__.py's docstring gives the layers and why; lowest first. A package's modules
# and its __init__ are its layer; the entry points are the top-level modules (the command lines).
LAYERS = {
    "core": ["core", "core.*"],
    "models": ["models", "models.*"],
    "noise": ["noise", "noise.*"],
    "methods": ["methods", "methods.*"],
    "config": ["config", "config.*"],
    "data": ["data", "data.*"],
    "train": ["train", "train.*"],
    "experiments": ["experiments", "experiments.*"],
    "entry points": ["run", "predict", "label_issues", "reproduce", "sweep", ""],
}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(package: Path) -> dict[str, Path]:
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))
            if "metrics/" not in str(p.relative_to(package)).replace("\\", "/") or p.name == "__init__.py"}


MODULES = package_modules(PACKAGE)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _import_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every import statement anywhere in the module (functions too), except under TYPE_CHECKING."""
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        todo.extend(child for child in ast.iter_child_nodes(node) if not _is_type_checking(child))
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path] = MODULES) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its body (``from .x import y``,
    ``from . import (a, b)`` -- every one of them --, ``import jocor_plugin.x``)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # ``from pkg import a, b``: the submodules named, else (names defined in pkg) pkg itself
            submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
            # importing from a package runs its __init__ first: a dependency too, unless it is the
            # module's own package (``from . import sibling``)
            candidates = submodules + ([target] if target != package or not submodules else [])
        else:
            candidates = [alias.name for alias in node.names]
        found.update(c for c in candidates if c in modules and c != name)
    return found


def layer_of(name: str) -> int:
    """The index in LAYERS of a module (``jocor_plugin.x.y``)."""
    short = name[len("jocor_plugin."):] if name != "jocor_plugin" else ""
    for index, members in enumerate(LAYERS.values()):
        if short in members or any(m.endswith(".*") and short.startswith(m[:-1]) for m in members):
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS and to jocor_plugin/__init__.py's docstring")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (empty if there is none): depth-first search."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_the_scan_sees_every_name_of_a_parenthesised_import(tmp_path):
    """A planted circle through ``from . import (a, b)`` (the second name) and one through an import
    inside a function are both found; an import under TYPE_CHECKING is not a dependency."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import (a, b)\n")
    (pkg / "a.py").write_text("X = 1\n")
    (pkg / "b.py").write_text("def f():\n    from . import X  # pkg's own name, so pkg itself\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    modules = package_modules(pkg)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph["pkg"] == {"pkg.a", "pkg.b"} and graph["pkg.b"] == {"pkg"} and graph["pkg.c"] == set()
    assert find_cycle(graph) == ["pkg", "pkg.b", "pkg"]


def test_a_planted_upward_import_is_caught():
    graph = {"jocor_plugin.config.recipe": {"jocor_plugin.train.trainer"}, "jocor_plugin.train.trainer": {"jocor_plugin.config.recipe"}}
    assert upward_imports(graph) == ["jocor_plugin.config.recipe -> jocor_plugin.train.trainer"]


def test_no_module_imports_from_a_higher_layer():
    graph = {name: imports_of(name, path) for name, path in MODULES.items()}
    assert upward_imports(graph) == []


def test_the_layers_in_the_test_are_the_packages_docstring():
    doc = importlib.import_module("jocor_plugin").__doc__
    for members in LAYERS.values():
        for member in members:
            if member and not member.endswith(".*"):
                assert re.search(rf"\b{re.escape(member)}\b", doc), member


def test_the_trainer_offers_the_methods_contract():
    """Every attribute and method of ``TrainerContext`` exists on the trainer (the only thing a
    method may use), so a method written against the contract runs."""
    from jocor_plugin.methods.contract import TrainerContext
    from jocor_plugin.train.trainer import Trainer

    methods = [n for n, v in vars(TrainerContext).items() if callable(v) and not n.startswith("_")]
    for name in methods:
        assert callable(getattr(Trainer, name, None)), name
    init = (PACKAGE / "train" / "trainer.py").read_text()
    for name in TrainerContext.__annotations__:
        assert re.search(rf"self\.{name}\b", init) or hasattr(Trainer, name), name


def test_no_module_imports_another_in_a_circle():
    # a package's __init__ imports its modules; a module importing its own package's __init__
    # back would be a circle too, and counts
    graph = {name: imports_of(name, path) for name, path in MODULES.items()}
    assert graph["jocor_plugin.train.trainer"] >= {"jocor_plugin.train.engine", "jocor_plugin.train.checkpoint"}  # the parser sees them
    assert find_cycle(graph) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    """Each module imports and offers what it says: every name of its ``__all__`` exists, once; a
    module without ``__all__`` is a method's, and importing it registered that method."""
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        from jocor_plugin.methods import method_class

        registered = re.findall(r"@register_method\([\"'](\w+)[\"']\)", MODULES[name].read_text())
        assert registered, f"{name} has no __all__ and registers no method"
        assert all(method_class(method).__module__ == name for method in registered), registered
        return
    assert len(set(exported)) == len(exported), sorted(n for n in exported if exported.count(n) > 1)
    assert [n for n in exported if not hasattr(module, n)] == []


def test_the_trainer_and_engine_name_no_method():
    from jocor_plugin.methods import list_methods

    for module in ("train/trainer.py", "train/engine.py"):
        text = (PACKAGE / module).read_text()
        for method in list_methods():
            # the registered name as code would spell it ("JoCoR" in prose names the paper); "jocor"
            # also stands in the package's own name (jocor_plugin), which doesn't count
            assert not re.search(rf"\b{method}\b(?!_plugin)", text), (module, method)
