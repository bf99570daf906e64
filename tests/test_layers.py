"""The import graph stays layered: chain <- consensus <- node <- cli.devnet <- cli.commands."""

from pathlib import Path

from tests.check_layers import violations


def test_the_tree_imports_only_downwards_and_without_cycles() -> None:
    assert violations() == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_an_upward_import_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "chain/__init__.py": "",
            "chain/state.py": "import os\nfrom node.runner import Node\n",
            "node/__init__.py": "",
            "node/runner.py": "from chain.state import State\n",
        },
    )
    found = violations(root)
    assert any(
        line.startswith("chain/state.py:2: chain.state (chain) imports node") for line in found
    )
    assert any("import cycle: chain.state -> node.runner -> chain.state" in line for line in found)


def test_the_devnet_harness_may_not_import_the_commands(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "cli/__init__.py": "",
            "cli/devnet/__init__.py": "",
            "cli/devnet/bench.py": "from ..commands import common\n",
            "cli/commands/__init__.py": "",
            "cli/commands/common.py": "from cli.devnet import bench\n",
        },
    )
    found = violations(root)
    assert any("cli.devnet.bench (cli.devnet) imports cli.commands" in line for line in found)
