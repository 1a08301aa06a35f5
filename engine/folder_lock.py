"""One run at a time per output folder: two runs appending to one results.jsonl, one of them rewriting
it on a resume, would lose rows. The lock is an flock on DIR/.lock, so the kernel drops it when the
process ends, however it ends (kill -9 included): a stale lock never blocks the next run."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from engine.errors import UsageError


@contextlib.contextmanager
def locked_folder(folder: Path) -> Iterator[None]:
    """Hold DIR's lock while the body runs; UsageError (nothing written) if another run holds it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot use {folder} as the output folder: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{folder} is in use by another stagewise run: wait for it to end, "
                             "or pass another --out") from None
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock
