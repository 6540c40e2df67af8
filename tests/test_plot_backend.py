"""Writing pictures must not change a notebook user's matplotlib backend (visualize set Agg at import)."""

import subprocess
import sys


def test_pictures_leave_the_users_matplotlib_backend_alone(tmp_path):
    script = f"""
import matplotlib
import torch
from ddpm_lab.visualize import save_image_grid, save_points_figure
from ddpm_lab import leaderboard
save_image_grid(torch.rand(4, 1, 8, 8) * 2 - 1, {str(tmp_path / "grid.png")!r})
save_points_figure(torch.randn(50, 2), torch.randn(50, 2), {str(tmp_path / "points.png")!r})
print(matplotlib.get_backend())
"""
    result = subprocess.run(
        [sys.executable, "-c", script], env={"MPLBACKEND": "svg", "PATH": ""}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().lower() == "svg"
    assert (tmp_path / "grid.png").stat().st_size > 100 and (tmp_path / "points.png").stat().st_size > 100


def test_trajectory_labels_use_the_0_based_timesteps_of_the_code():
    from ddpm_lab.visualize import trajectory_label

    assert [trajectory_label(level, 1000) for level in (1000, 500, 1, 0)] == ["x_T (t=999)", "t=499", "t=0", "x_0"]
