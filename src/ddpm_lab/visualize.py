"""Pictures people would rather look at: sample grids, denoising trajectories, 2-D scatters, schedule curves.

Pure matplotlib/PIL; no Lightning. Images are tensors in [-1, 1]. Figures are drawn on their own Agg canvas,
without pyplot, so importing this module never changes the user's matplotlib backend (a notebook keeps its own).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torchvision.utils import make_grid

from .diffusion import Trajectory
from .figures import figure


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 [0, 255], rounding to nearest (truncation would bias every pixel down by 0.5)."""
    return ((images.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (rows*(H+p)+p, cols*(W+p)+p, 3) grid with white padding
    (torchvision's make_grid; a single image is padded too, where make_grid returns it bare)."""
    pixels = to_uint8(images)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    if len(pixels) == 1:
        grid = torch.nn.functional.pad(pixels[0], (padding,) * 4, value=255)
    else:
        grid = make_grid(pixels, nrow=nrow or math.ceil(math.sqrt(len(pixels))), padding=padding, pad_value=255)
    return grid.permute(1, 2, 0).numpy()


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> np.ndarray:
    """Write a PNG grid of images (upscaled ``scale`` times with nearest neighbour for small images)."""
    grid = image_grid(images, nrow)
    picture = Image.fromarray(grid)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return np.asarray(picture)


def trajectory_label(level: int | float, start: int | float, level_name: str | None = None) -> str:
    """A trajectory frame's label: ``level`` is 1-based (DDPM's x_level), so the state sits at 0-based t - 1;
    a continuous objective's level is its noise variable's value (``level_name``: sigma or t)."""
    if level_name is not None:
        return f"{level_name}={level:.3g}"
    if level == 0:
        return "x_0"
    return f"x_T (t={level - 1})" if level == start else f"t={level - 1}"


def save_trajectory_strip(trajectory: Trajectory, path: str | Path, num_rows: int = 8) -> np.ndarray:
    """Rows: samples; columns: the states from pure noise to the sample, labelled "x_T", then with the 0-based
    timestep each state sits at (the code's and README's t = 0..T-1), then "x_0"."""
    states = trajectory.states[:, :num_rows]  # (K, R, C, H, W)
    k, r = states.shape[:2]
    grid = image_grid(states.transpose(0, 1).reshape(k * r, *states.shape[2:]), nrow=k)
    fig, ax = figure(figsize=(max(4.0, 1.0 * k), max(2.0, 1.0 * r) + 0.6), dpi=100)
    ax.imshow(grid, interpolation="nearest")
    cell = grid.shape[1] / k
    first = trajectory.noise_levels[0]
    labels = [trajectory_label(level, first, trajectory.level_name) for level in trajectory.noise_levels]
    ax.set_xticks([cell * (i + 0.5) for i in range(k)], labels, fontsize=8)
    ax.set_yticks([])
    ax.set_title("denoising trajectory: x_T (noise) -> x_0 (sample)", fontsize=9)
    return _save_figure(fig, path)


def save_points_figure(
    samples: torch.Tensor,
    data: torch.Tensor,
    path: str | Path,
    trajectory: Trajectory | None = None,
    title: str = "",
    num_paths: int = 10,
) -> np.ndarray:
    """2-D samples over the data, with the reverse paths of ``num_paths`` points from noise to data."""
    fig, axes = figure(1, 2 if trajectory is not None else 1, figsize=(10 if trajectory else 5, 5), dpi=100)
    axes = np.atleast_1d(axes)
    data, samples = data.cpu().numpy(), samples.detach().cpu().numpy()
    axes[0].scatter(data[:, 0], data[:, 1], s=2, alpha=0.3, c="tab:blue", label="data")
    axes[0].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, c="tab:orange", label="samples")
    axes[0].legend(loc="upper right", markerscale=5)
    axes[0].set_title(title or "samples over held-out data")
    if trajectory is not None:
        paths = trajectory.states[:, :num_paths].numpy()  # (K, P, 2)
        axes[1].scatter(data[:, 0], data[:, 1], s=2, alpha=0.15, c="tab:blue")
        for p in range(paths.shape[1]):
            axes[1].plot(paths[:, p, 0], paths[:, p, 1], "-o", ms=2, lw=1)
            axes[1].scatter(paths[-1, p, 0], paths[-1, p, 1], marker="*", s=60, c="k", zorder=3)
        axes[1].set_title(f"reverse trajectories of {paths.shape[1]} points (x_T -> x_0, * = end)")
    (x_lo, y_lo), (x_hi, y_hi) = view_limits(data, samples)
    outside = int(((samples < [x_lo, y_lo]) | (samples > [x_hi, y_hi])).any(axis=1).sum())
    if outside:  # a few diverged samples would otherwise squeeze the data into a dot
        axes[0].set_title(f"{axes[0].get_title()}\n{outside} of {len(samples)} samples lie outside this view")
    for ax in axes:
        ax.set(xlim=(x_lo, x_hi), ylim=(y_lo, y_hi), aspect="equal")
    return _save_figure(fig, path)


def view_limits(data: np.ndarray, samples: np.ndarray, margin: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Axis limits (lo (2,), hi (2,)) that hold all the data and the central 96% of the samples, with a margin:
    robust to the few samples (a diverging 1%) that land far away."""
    finite = samples[np.isfinite(samples).all(axis=1)]
    lo, hi = data.min(axis=0), data.max(axis=0)
    if len(finite):
        lo, hi = np.minimum(lo, np.percentile(finite, 2, axis=0)), np.maximum(hi, np.percentile(finite, 98, axis=0))
    pad = margin * (hi - lo).max()
    return lo - pad, hi + pad


def _save_figure(fig: Figure, path: str | Path) -> np.ndarray:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
