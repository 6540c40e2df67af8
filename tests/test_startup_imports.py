"""What each entry point imports before it runs: the heavy packages (Lightning alone takes 5-10 s to import)
only once the command has been validated and does its work, so --help, --version, --cfg job and config errors
answer in about a second or two."""

from __future__ import annotations

import subprocess
import sys


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
