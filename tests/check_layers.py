"""The import graph is layered: chain <- consensus <- node <- cli.devnet <- cli.commands.

Run as ``python -m tests.check_layers``: prints every import that points up a layer or
closes a cycle between modules, and exits 1 if there is one. The pure core stays testable
in one process only while nothing in it reaches up into the I/O shell, so this is checked
on every test run rather than left to review.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lower layers first; a module may import its own layer and those before it.
LAYERS = ("chain", "consensus", "node", "cli.devnet", "cli.commands", "cli")
PACKAGES = ("chain", "consensus", "node", "cli")


def layer_of(module: str) -> int | None:
    """The most specific layer a dotted module name belongs to, or None if not ours."""
    best = None
    for index, prefix in enumerate(LAYERS):
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(LAYERS[best])
        ):
            best = index
    return best


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def imports_of(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import of one of our packages in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if layer_of(name) is not None:
                yield node.lineno, name


def violations(root: Path = ROOT) -> list[str]:
    found: list[str] = []
    known = dict(modules(root))
    graph: dict[str, set[str]] = {name: set() for name in known}
    for module, path in known.items():
        own = layer_of(module)
        assert own is not None
        for line, name in imports_of(module, path):
            target = layer_of(name)
            assert target is not None
            if target > own:
                found.append(
                    f"{path.relative_to(root)}:{line}: {module} ({LAYERS[own]}) imports "
                    f"{name} ({LAYERS[target]}), a higher layer"
                )
            if name in known and name != module:
                graph[module].add(name)
    found.extend(_cycles(graph))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Module-level import cycles, each reported once, by depth-first search."""
    found: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                found.append("import cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def main() -> int:
    found = violations()
    for line in found:
        print(line)
    print(f"{len(found)} layering problem(s)" if found else "imports are layered, no cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
