"""One training file from several: each source taken N times, some row kinds left out, image paths made
absolute so the mix can live anywhere.

A judge trained in weights of its own (stagewise/model/judge/) learns from judge and pre-check rows only,
with the model's own sampled pairs weighted above the teacher's: `trainset` and `onpolicy` write every
kind into one file, and this picks and weighs them. A row's kind is the last "-" part of its id
(ITEM-k-KIND), as both writers name them.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def parse_source(spec: str) -> tuple[Path, int]:
    """"PATH" or "PATH:N" (N ≥ 1 copies)."""
    path, sep, times = spec.rpartition(":")
    if not sep or not times.isdigit():
        return Path(spec), 1
    if int(times) < 1:
        raise ValueError(f"{spec}: a source is taken at least once")
    return Path(path), int(times)


def row_kind(row: dict) -> str:
    return str(row.get("id", "")).rsplit("-", 1)[-1]


def write_mix(out, sources: list[tuple[Path, int]], drop: frozenset[str] = frozenset()) -> Counter:
    """OUT from `sources` ((jsonl, copies) in order), without rows of the kinds in `drop`; returns the
    rows written per kind. Raises ValueError naming the file and line of a row that is not JSON, or an OUT
    that is also a source; OUT is replaced only once the whole mix is written."""
    out = Path(out)
    if any(path.resolve() == out.resolve() for path, _ in sources):
        raise ValueError(f"{out} is also a source: write the mix to another file")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        counts = _write(tmp, sources, drop)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return counts


def _write(out: Path, sources: list[tuple[Path, int]], drop: frozenset[str]) -> Counter:
    counts: Counter = Counter()
    with open(out, "w", encoding="utf-8") as f:
        for path, times in sources:
            rows: list[str] = []
            kinds: Counter = Counter()
            with open(path, encoding="utf-8") as src:
                for n, line in enumerate(src, 1):
                    if not line.strip():
                        continue
                    try:
                        r = json.loads(line)
                    except ValueError as e:
                        raise ValueError(f"{path}:{n}: not a JSON row ({e})") from None
                    if row_kind(r) in drop:
                        continue
                    if r.get("image"):
                        r["image"] = str((path.parent / r["image"]).resolve())
                    rows.append(json.dumps(r) + "\n")
                    kinds[row_kind(r)] += 1
            for _ in range(times):
                f.writelines(rows)
            counts.update({k: v * times for k, v in kinds.items()})
    return counts
