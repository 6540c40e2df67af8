"""Collect run records and rank arms (runs that differ only in seed) by a metric, per measurement protocol,
with 95% intervals over seeds and significance marks; write the tables and pictures.

records: what a run dir says; ranking: protocol groups, arms and their tests; tables/plots: the outputs.
"""

from __future__ import annotations

from pathlib import Path

from .plots import metric_against_nfe, plot_against_nfe, plot_against_step, plot_arms
from .ranking import Arm, Comparison, Group, Leaderboard, build_leaderboard
from .records import PROTOCOL_FIELDS, Run, find_runs
from .tables import arm_label, arm_rows, markdown, run_rows, write_csv


def write_outputs(board: Leaderboard, out_dir: str | Path) -> dict[str, Path]:
    """leaderboard.md and leaderboard.csv (one row per arm), runs.csv (one row per run), arms.png (each arm's
    mean and 95% interval), leaderboard.png (metric against training step per run); for runs that differ in
    sampler and NFE (``ddpm-eval -m +ablation=sampler_nfe``) also metric_vs_nfe.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs = {
        "md": out / "leaderboard.md",
        "csv": out / "leaderboard.csv",
        "runs_csv": out / "runs.csv",
        "arms_png": out / "arms.png",
        "png": out / "leaderboard.png",
    }
    write_csv(outputs["csv"], *arm_rows(board))
    write_csv(outputs["runs_csv"], *run_rows(board))
    outputs["md"].write_text(markdown(board))
    plot_arms(board, outputs["arms_png"])
    plot_against_step(board, outputs["png"])
    if "nfe" in board.choice_columns:
        outputs["nfe_png"] = out / "metric_vs_nfe.png"
        plot_against_nfe(board, outputs["nfe_png"])
    return outputs


def log_to_wandb(board: Leaderboard, outputs: dict[str, Path], project: str = "ddpm-lab") -> str:
    """One W&B run (job_type leaderboard; offline unless WANDB_MODE says otherwise) holding the arm table, the
    pictures, and per arm ``<group>/<rank>/mean|ci95_low|ci95_high|n`` in its summary. Returns its dir."""
    import os

    import wandb

    header, rows = arm_rows(board)
    run = wandb.init(
        project=project,
        job_type="leaderboard",
        mode=os.environ.get("WANDB_MODE", "offline"),
        dir=str(outputs["md"].parent),
        config={"metric": board.metric, "which": board.which},
    )
    try:
        run.log({"arms": wandb.Table(columns=header, data=rows)})
        run.log({name: wandb.Image(str(path)) for name, path in outputs.items() if path.suffix == ".png"})
        for g, group in enumerate(board.groups, start=1):
            for arm in group.arms:
                s = arm.summary
                fields = {"mean": s.mean, "std": s.std, "n": s.n, "ci95_low": s.ci_low, "ci95_high": s.ci_high}
                run.summary.update({f"g{g}/{arm.rank}/{k}": v for k, v in fields.items() if v is not None})
        return str(run.dir)
    finally:
        run.finish()


__all__ = [
    "PROTOCOL_FIELDS",
    "Arm",
    "Comparison",
    "Group",
    "Leaderboard",
    "Run",
    "arm_label",
    "arm_rows",
    "build_leaderboard",
    "find_runs",
    "log_to_wandb",
    "markdown",
    "metric_against_nfe",
    "run_rows",
    "write_outputs",
]
