"""The package's shape (issue 17): every module imports, no module imports another in a circle
(function-level imports included), and the trainer names no method."""
import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jocor_plugin"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "metrics/" not in str(p.relative_to(PACKAGE))
           or p.name == "__init__.py"}


def imports_of(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its body (``from .x import y``,
    ``from . import x``, ``import jocor_plugin.x``)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            if candidate in MODULES and candidate != name:
                found.add(candidate)
                break
    return found


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


def test_no_module_imports_another_in_a_circle():
    # a package's __init__ imports its modules; a module importing its own package's __init__
    # back would be a circle too, and counts
    graph = {name: imports_of(name, path) for name, path in MODULES.items()}
    assert graph["jocor_plugin.trainer"] >= {"jocor_plugin.engine", "jocor_plugin.checkpoint"}  # the parser sees them
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

    for module in ("trainer.py", "engine.py"):
        text = (PACKAGE / module).read_text()
        for method in list_methods():
            # the registered name as code would spell it ("JoCoR" in prose names the paper); "jocor"
            # also stands in the package's own name (jocor_plugin), which doesn't count
            assert not re.search(rf"\b{method}\b(?!_plugin)", text), (module, method)
