"""Crash-safe checkpoints and exact-resume state.

``AtomicCheckpointIO`` writes to a temp file, fsyncs, then renames over the target: a process killed during a
save leaves the previous checkpoint intact (and the next run removes the temp file it left). Every tensor's
CRC-32 is stored beside it and checked on load, so a damaged file is refused with a message instead of loading
zeroed weights. Loading always uses ``torch.load(weights_only=True)``, so a checkpoint carrying a pickled
payload is refused and the payload never runs.

``capture_rng_state``/``restore_rng_state`` hold the RNG states Lightning does not save (torch CPU/CUDA, NumPy,
Python), as tensors and plain numbers only, so they load under weights_only=True.
"""

from __future__ import annotations

import errno
import pickle
import random
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from ..atomic_files import atomic_path

CHECKSUMS_KEY = "ddpm_lab_checksums"


def _tensors(value: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nested checkpoint (dicts, lists, tuples), with a dotted path naming it."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != CHECKSUMS_KEY:
                yield from _tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{prefix}[{index}]")


def tensor_checksums(checkpoint: dict[str, Any]) -> dict[str, int]:
    """CRC-32 of the bytes of every tensor in ``checkpoint`` (about 1 GB/s: under a second for a CIFAR U-Net
    with its EMA and Adam states)."""
    sums = {}
    for name, tensor in _tensors(checkpoint):
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        sums[name] = zlib.crc32(data)
    return sums


def _describe_write_failure(err: BaseException, path: Path) -> str | None:
    """A full disk shows up as ENOSPC, or as torch's zip writer's "unexpected pos": say so, with the space left."""
    full = isinstance(err, OSError) and err.errno == errno.ENOSPC
    if full or "unexpected pos" in str(err):
        free = shutil.disk_usage(path.parent).free
        return (
            f"no space left on the device while writing checkpoint {path} ({free / 2**20:.0f} MiB free there); "
            "the previous checkpoint is intact. Free some space, or write runs elsewhere with paths.log_dir=..."
        )
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        try:
            with atomic_path(path, fsync=True) as tmp, open(tmp, "wb") as handle:
                torch.save({**checkpoint, CHECKSUMS_KEY: tensor_checksums(checkpoint)}, handle)
        except (OSError, RuntimeError) as err:
            message = _describe_write_failure(err, path)
            if message is None:
                raise
            raise OSError(errno.ENOSPC, message) from err

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(path, map_location or "cpu")


class CheckpointDamagedError(ValueError):
    """A checkpoint file is truncated or corrupted (or its tensors no longer match their checksums)."""


def check_is_torch_file(path: Path) -> None:
    """Refuse a file that torch.save did not write (a zip archive, or a legacy pickle) before loading it, naming
    what it is instead, so that an image passed as ckpt_path is not reported as pickled objects or damage."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return
    kinds = {b"\x89PNG": "a PNG image", b"\xff\xd8": "a JPEG image", b"GIF8": "a GIF image", b"{": "JSON text"}
    kind = next((name for magic, name in kinds.items() if head.startswith(magic)), "not a file torch.save wrote")
    raise ValueError(
        f"{path} is not a checkpoint ({kind}): pass a Lightning .ckpt written by ddpm-train, e.g. "
        "ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt."
    )


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` (a pickled payload is refused, never run) and
    check every tensor against the CRC-32 stored when it was saved."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (ckpt_path=...).")
    check_is_torch_file(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise CheckpointDamagedError(_damaged(path, f"{type(err).__name__}: {str(err).splitlines()[0]}")) from err
        raise ValueError(
            f"refusing to load {path}: it holds pickled objects beyond tensors and plain values. ddpm-lab loads "
            "checkpoints with torch.load(weights_only=True) so that pickled code never runs; a checkpoint "
            "written by ddpm-lab never needs more."
        ) from None
    except Exception as err:  # zip and storage errors: a truncated or overwritten file
        raise CheckpointDamagedError(_damaged(path, f"{type(err).__name__}: {str(err).splitlines()[0]}")) from err
    stored = checkpoint.pop(CHECKSUMS_KEY, None) if isinstance(checkpoint, dict) else None
    if stored is not None:
        actual = tensor_checksums(checkpoint)
        bad = [name for name, crc in stored.items() if actual.get(name) != crc]
        if bad:
            raise CheckpointDamagedError(
                _damaged(path, f"{len(bad)} of {len(stored)} tensors differ from their saved checksums, e.g. {bad[0]}")
            )
    return checkpoint


def _damaged(path: Path, detail: str) -> str:
    return (
        f"checkpoint {path} is damaged ({detail}): it was truncated or overwritten after it was saved. Resume or "
        "evaluate from an earlier checkpoint (checkpoints/step_*.ckpt), or train again."
    )

    return True


def peek_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents with its tensors memory-mapped, not read (``mmap``), so start-up checks can look
    at a multi-GB checkpoint in well under a second (step, stored config, tensor shapes). No checksum check."""
    check_is_torch_file(Path(path))
    try:
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint (mmap needs one): fall back to a full, still safe, load
        checkpoint = load_checkpoint(path)
    return checkpoint if isinstance(checkpoint, dict) else {}


def stored_run_config(path: str | Path) -> str | None:
    """The run config (YAML) a ddpm-lab checkpoint carries (None if it carries none)."""
    stored = peek_checkpoint(path).get("ddpm_lab", {}).get("config")
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
