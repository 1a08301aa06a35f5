"""Search against a judge that always writes "I choose response 2": which verdict settings recover it.

    python bench/biased_judge.py [--items 20] [--out DIR]

The scripted server (tests/fake_server.py) gives each request's N = 4 candidates qualities 0..3 that
conclude A, B, C and D ([[answers-by-q:A,B,C,D]]; every item's reference is D), and its judge writes
"response 2" whatever the pair while the logprobs at the verdict token still put 0.8 on the better one
([[judge-always-2]]): a position-biased judge that still ranks. `stagewise compare` runs chain,
best_of_n, stage_beam and vote under each verdict setting; this prints, per setting, accuracy and
the judge-quality fields every report carries (docs/runs.md), so the table in the README can be rerun.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scale import start_server  # noqa: E402

SETTINGS = {
    "first, text (the old rule)": ["--judge-order", "first", "--judge-logprobs", "off"],
    "first, logprobs (default)": ["--judge-order", "first", "--judge-logprobs", "on"],
    "both, text": ["--judge-order", "both", "--judge-logprobs", "off"],
    "both, logprobs": ["--judge-order", "both", "--judge-logprobs", "on"],
    "--faithful (knockout)": ["--faithful"],
}


def write_items(path: Path, count: int) -> None:
    with path.open("w") as f:
        for i in range(count):
            question = f"Which bar is the tallest? ({i}) [[judge-always-2]] [[answers-by-q:A,B,C,D]]"
            f.write(json.dumps({"id": f"s{i}", "question": question, "answer": "D"}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    a = ap.parse_args()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc, api_base = start_server(0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = a.out or Path(tmp)
            out.mkdir(parents=True, exist_ok=True)
            items = out / "items.jsonl"
            write_items(items, a.items)
            print("| setting | best_of_n / stage_beam / vote accuracy | chain | best_of_n judge: picks 2nd, "
                  "acc on decidable | stage_beam conclusion judge: picks 2nd, acc on decidable |")
            print("|---|---|---|---|---|")
            for i, (name, flags) in enumerate(SETTINGS.items()):
                run = out / f"setting{i}"
                subprocess.run([sys.executable, "-m", "stagewise", "compare", str(items), "--out", str(run),
                                "--model", "hosted_vllm/fake", "--api-base", api_base, "--no-progress", *flags],
                               check=True, env=env, stdout=subprocess.DEVNULL)
                print(row(name, json.loads((run / "report.json").read_text())))
    finally:
        proc.terminate()


def row(name: str, report: dict) -> str:
    graphs = {g["graph"]: g for g in report["graphs"]}

    def quality(graph: str, judge: str) -> str:
        j = graphs[graph]["judge"].get(judge)
        if j is None:
            return "–"
        accuracy = "–" if j["accuracy"] is None else f"{j['accuracy']:.2f} of {j['decidable']}"
        return f"{j['second_rate']:.2f}, {accuracy}"

    accuracy = " / ".join(f"{graphs[g]['accuracy']:.2f}" for g in ("best_of_n", "stage_beam", "vote"))
    return (f"| {name} | {accuracy} | {graphs['chain']['accuracy']:.2f} | {quality('best_of_n', 'answer')} | "
            f"{quality('stage_beam', 'conclusion')} |")


if __name__ == "__main__":
    main()
