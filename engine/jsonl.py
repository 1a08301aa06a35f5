"""Append-only JSONL files that survive kill -9: a torn last line is cut off before we append again,
and a whole file is only ever replaced atomically (write a new file, fsync, rename)."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import orjson


def repair_tail(path: Path) -> None:
    """Make `path` end at a line boundary. A last line without its newline is kept (newline added)
    when it is a whole JSON value, else cut off: it is a write that a crash interrupted."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        start = max(0, size - (1 << 20))
        while True:  # find the start of the torn line (lines can be long: read back in chunks)
            f.seek(start)
            chunk = f.read(size - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0 or start == 0:
                break
            start = max(0, start - (1 << 20))
        line_start = start + cut + 1 if cut >= 0 else 0
        f.seek(line_start)
        tail = f.read()
        try:
            orjson.loads(tail)
        except orjson.JSONDecodeError:
            f.truncate(line_start)
        else:
            f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())


def replace_atomically(path: Path, lines: Iterable[bytes]) -> None:
    """Write `lines` (each ending in a newline) as the new content of `path`: either the old or the
    new file is there after a crash at any moment, never a mix or a half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself is durable
    finally:
        os.close(fd)


def append_durably(path: Path, lines: list[bytes]) -> None:
    with open(path, "ab") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
