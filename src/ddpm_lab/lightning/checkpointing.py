"""Crash-safe checkpoints and exact-resume state.

``AtomicCheckpointIO`` writes to a temp file, fsyncs, then renames over the target: a process killed during a
save leaves the previous checkpoint intact. Loading always uses ``torch.load(weights_only=True)``, so a
checkpoint carrying a pickled payload is refused and the payload never runs.

``capture_rng_state``/``restore_rng_state`` hold the RNG states Lightning does not save (torch CPU/CUDA, NumPy,
Python), as tensors and plain numbers only, so they load under weights_only=True.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(path, map_location or "cpu")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: a pickled payload is refused, never run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (ckpt_path=...).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(
            f"refusing to load {path}: it is not a plain weights checkpoint ({type(err).__name__}: {err}). "
            "ddpm-lab loads checkpoints with torch.load(weights_only=True) so that pickled code never runs."
        ) from err


def stored_run_config(path: str | Path) -> str | None:
    """The run config (YAML) a ddpm-lab checkpoint carries (None if it carries none), read without loading
    its tensors (``mmap``), so start-up checks can look at a multi-GB checkpoint in well under a second."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint (mmap needs one): fall back to a full, still safe, load
        checkpoint = load_checkpoint(path)
    stored = checkpoint.get("ddpm_lab", {}).get("config") if isinstance(checkpoint, dict) else None
    return stored if isinstance(stored, str) and stored else None


def capture_rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": int(version), "state": list(state), "gauss": gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def seed_rank_stream(rank: int) -> None:
    """Give DDP rank ``rank`` (> 0) its own torch/NumPy/Python random streams, derived from the run's seed.

    Lightning seeds every rank with the same seed, so without this all ranks draw the same timesteps, noise
    and dropout masks: a global batch of 128 on 4 devices holds only 32 distinct (t, eps) draws. Rank 0 keeps
    the run's stream, so one-process runs are unchanged."""
    if rank <= 0:
        return
    seed = (torch.initial_seed() + 1_000_003 * rank) % (2**63)
    torch.manual_seed(seed)  # every device's generator too
    np.random.seed(seed % (2**32))
    random.seed(seed)


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's RNG state (rank order), for the checkpoint: a collective, so all ranks must call it."""
    state = capture_rng_state()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [state]
    states: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(states, state)
    return states
