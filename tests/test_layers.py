"""The package's layers, held: no module imports one that imports it back (TYPE_CHECKING
imports count: a cycle hidden by them is still one), and no protocol imports the factory."""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial import unittest

PACKAGE = Path(__file__).resolve().parent.parent / "hello_asgi"
PROTOCOLS = ("http1", "http2", "http3", "websocket", "resource", "context", "stream")


def module_imports() -> dict[str, set[str]]:
    """Each module's imports of its siblings at module level (under ``if TYPE_CHECKING:``
    too); imports inside functions, which load a module when first needed, are left out."""
    names = {path.stem for path in PACKAGE.glob("*.py")}
    graph = {}
    for path in PACKAGE.glob("*.py"):
        found: set[str] = set()
        for top in ast.parse(path.read_text()).body:
            for node in ast.walk(top) if isinstance(top, (ast.If, ast.Try)) else [top]:
                if isinstance(node, ast.ImportFrom) and node.level == 1:
                    found.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
        graph[path.stem] = found & names
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself again, with one path back."""
    found = []
    for start in sorted(graph):
        seen, path = {start}, [start]
        stack = [iter(sorted(graph[start]))]
        while stack:
            following = next(stack[-1], None)
            if following is None:
                stack.pop()
                path.pop()
            elif following == start:
                found.append([*path, start])
                break
            elif following not in seen:
                seen.add(following)
                path.append(following)
                stack.append(iter(sorted(graph[following])))
    return found


class LayerTests(unittest.TestCase):
    def test_no_import_cycle(self) -> None:
        self.assertEqual(cycles(module_imports()), [])

    def test_the_checker_finds_a_cycle(self) -> None:
        self.assertEqual(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}),
                         [["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"]])

    def test_no_protocol_imports_the_factory(self) -> None:
        graph = module_imports()
        self.assertEqual({name for name in PROTOCOLS if "factory" in graph[name]}, set())
