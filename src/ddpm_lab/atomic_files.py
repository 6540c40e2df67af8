"""Files written whole or not at all: every record, checkpoint, snapshot and cache ddpm-lab writes goes through a
temp file beside its target and one rename, so a reader (or a job killed mid-write) sees the old file or the new
one, never half of one. No torch or Lightning import."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Temp files are ``.NAME.tmp-PID``: ``remove_stale_temp_files`` finds those whose writer died.
TEMP_MARKER = ".tmp-"


@contextmanager
def atomic_path(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write to; when the block succeeds the temp file replaces ``path`` in
    one rename (after an fsync if asked: checkpoints), and when it fails the temp file is removed and ``path`` is
    untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after the rename


def write_text_atomically(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process we may not signal still exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temp files that writes killed mid-way left in ``directory``; a file whose writer is still
    alive is kept. Returns the files removed."""
    directory = Path(directory)
    removed = []
    for tmp in directory.glob(f".*{TEMP_MARKER}*") if directory.is_dir() else []:
        pid = tmp.name.rsplit(TEMP_MARKER, 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed
