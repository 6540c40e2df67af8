"""Imports: no cycle in the package, and what each entry point imports before it runs: the heavy packages
(Lightning alone takes 5-10 s to import) only once the command has been validated and does its work, so
--help, --version, --cfg job and config errors answer in about a second or two."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def loaded_after(imports: str, packages: tuple[str, ...]) -> None:
    code = (
        f"import sys, {imports}\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {packages!r})\n"
        "assert not bad, bad[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_offline_leaderboard_loads_neither_torch_nor_lightning():
    """ddpm-leaderboard reads JSON records and draws with matplotlib: it starts in about a second because it
    imports no torch, torchvision or Lightning (it took 5-10 s through ddpm_lab.visualize)."""
    loaded_after(
        "ddpm_lab.cli.leaderboard, ddpm_lab.metric_registry, ddpm_lab.run_record", ("torch", "torchvision", "lightning")
    )


def test_the_training_sampling_evaluation_and_fid_commands_load_lightning_only_when_they_run():
    loaded_after(
        "ddpm_lab.cli.train, ddpm_lab.cli.sample, ddpm_lab.cli.evaluate, ddpm_lab.cli.fid, "
        "ddpm_lab.data.image_datasets",
        ("lightning", "pytorch_lightning"),
    )


def import_graph(package: Path) -> dict[str, set[str]]:
    """Which ddpm_lab modules each module imports, at the top or inside a function (TYPE_CHECKING blocks
    aside). ``from . import submodule`` counts as an import of the submodule only."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        edges = set()
        for stmt in ast.parse(path.read_text()).body:
            if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.dump(stmt.test):
                continue
            for node in ast.walk(stmt):
                if isinstance(node, ast.Import):
                    edges |= {alias.name for alias in node.names if alias.name in modules}
                elif isinstance(node, ast.ImportFrom):
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    base = ".".join([*here[: len(here) - node.level + 1], node.module or ""]).strip(".")
                    if node.level == 0:
                        base = node.module or ""
                    submodules = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
                    edges |= submodules
                    if base in modules and len(submodules) < len(node.names):
                        edges.add(base)
        graph[name] = edges - {name}
    return graph


def test_the_package_has_no_import_cycle():
    """Not even through an import inside a function (cli/train -> ddp_launch -> ddp_worker -> train was one)."""
    graph = import_graph(Path(__file__).parents[1] / "src" / "ddpm_lab")
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            assert state.get(target) != 1, "import cycle: " + " -> ".join([*path[path.index(target) :], target])
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert "ddpm_lab.cli.ddp_launch" in graph["ddpm_lab.cli.train"]  # imported inside train(): counted
