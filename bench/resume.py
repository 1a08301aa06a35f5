"""What resuming a big run costs before its first new call: time and peak memory to read results.jsonl.

    python bench/resume.py --rows 100000 [--row-kb 1] [--errors 0.01]

Why it matters: a rerun reads every finished row to know what is done, and a process keeps the memory
it once peaked at for the rest of the run. Rows of about --row-kb each (a four-stage answer with its
usage is about 1 KB); --errors of them are server errors, which a rerun moves to retried.jsonl and so
rewrites the file. Each case runs in a fresh process, so its peak RSS is the load's own.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_rows(path: Path, rows: int, row_kb: float, errors: float) -> None:
    filler = "x" * int(row_kb * 1024 - 200)
    every = round(1 / errors) if errors else 0
    with open(path, "w") as f:
        for i in range(rows):
            failed = bool(every) and i % every == 0
            f.write(json.dumps({"id": f"q{i}", "status": "error" if failed else "ok", "response": filler,
                                "error_cause": "server" if failed else None,
                                "usage": {"calls": 4, "prompt_tokens": 900, "completion_tokens": 60}}) + "\n")


def load(path: str) -> None:
    """In the child: read the file as a rerun does, and print seconds and peak RSS."""
    sys.path.insert(0, str(ROOT))
    from engine.results import ResultsFile

    started = time.perf_counter()
    results = ResultsFile(Path(path))
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"done": len(results.done), "retrying": len(results.retrying), "s": round(seconds, 2),
                      "peak_rss_mb": round(peak_mb, 1)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--row-kb", type=float, default=1.0)
    p.add_argument("--errors", type=float, default=0.01, help="share of rows that are server errors")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = subprocess.run([sys.executable, "-c", "import resource, sys; sys.path.insert(0, sys.argv[1]); "
                                   "import engine.results; print(resource.getrusage(resource.RUSAGE_SELF)"
                                   ".ru_maxrss / 1024)", str(ROOT)], capture_output=True, text=True, check=True)
        print(f"baseline (engine imported): {float(baseline.stdout):.1f} MB")
        for name, errors in (("all ok", 0.0), (f"{a.errors:.0%} errors moved out", a.errors)):
            path = Path(tmp) / name.replace(" ", "_") / "results.jsonl"
            path.parent.mkdir()
            write_rows(path, a.rows, a.row_kb, errors)
            size_mb = path.stat().st_size / 2 ** 20
            out = subprocess.run([sys.executable, __file__, "--load", str(path)], capture_output=True, text=True,
                                 check=True).stdout
            r = json.loads(out)
            print(f"{a.rows} rows ({size_mb:.0f} MB), {name}: {r['s']} s, peak RSS {r['peak_rss_mb']} MB, "
                  f"{r['done']} done, {r['retrying']} to retry")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--load":
        load(sys.argv[2])
    else:
        main()
