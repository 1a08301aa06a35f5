"""The CLI explains itself: a version, a help a user can act on, every default shown, and progress
counts that match what the run wrote."""
from __future__ import annotations

import importlib.metadata
import json
import os
import pty
import re
import subprocess
import sys

import pytest

from conftest import ROOT, read_jsonl, stagewise, write_items

SUBCOMMANDS = ("generate", "compare", "train", "tiny-model", "export", "serve", "demo")


def _options(help_text: str) -> dict[str, str]:
    """`--name` → the whole help entry (its first line and the indented lines under it)."""
    section = re.split(r"\n(?:options|optional arguments):\n", help_text)[1]
    section = re.split(r"\n\n", section)[0]
    entries: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        m = re.match(r"  (-\S.*?)(?:\s{2,}|$)", line)
        if m:
            current = m.group(1)
            entries[current] = line
        elif current:
            entries[current] += " " + line.strip()
    return entries


def _help(*args: str) -> str:
    proc = stagewise(*args, "--help", env={"COLUMNS": "100"}, check=True)
    return proc.stdout


def test_version_comes_from_the_package_metadata():
    proc = stagewise("--version", check=True)
    assert proc.stdout.strip() == f"stagewise {importlib.metadata.version('stagewise')}"


def test_top_level_help_is_written_for_users():
    text = _help()
    assert "composition root" not in text
    for needed in ("SUMMARY", "examples:", "stagewise demo", "stagewise generate", "--version", "docs/"):
        assert needed in text, needed
    for command in SUBCOMMANDS:
        assert command in text, command


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_option_shows_its_default(command):
    entries = _options(_help(command))
    assert entries, "no options parsed"
    missing = []
    for names, entry in entries.items():
        if names.startswith("-h"):
            continue
        is_flag = all(" " not in part.strip() for part in names.split(","))  # no metavar: store_true
        if not (is_flag or "default" in entry or "required" in entry):
            missing.append(entry)
    assert not missing, "options without a default:\n" + "\n".join(missing)


def test_run_options_explain_models_sampling_and_the_reference():
    entries = _options(_help("generate"))
    model = entries["--model MODEL"]
    for needed in ("openai/", "hosted_vllm/", "--api-base", "hf:DIR", "vllm:DIR", "threads"):
        assert needed in model, needed
    for name in ("--seed SEED", "--temperature TEMPERATURE", "--top-p TOP_P"):
        assert len(entries[name].split(None, 2)) > 2, f"{name} has no help"
    assert "LLaVA-CoT" in _help("generate")


def _job(tmp_path, n_items=6):
    items = write_items(tmp_path / "items.jsonl",
                        [{"id": f"q{i}", "question": f"Which bar is tallest? ({i})", "answer": "A"}
                         for i in range(n_items)])
    return items


def _run_args(items, out, server):
    return ["generate", str(items), "--out", str(out), "--graph", "stage_beam", "--n", "2",
            "--model", "hosted_vllm/fake", "--api-base", server.api_base]


def _calls_in(line: str) -> int:
    return int(re.search(r"(\d+) calls", line).group(1))


def test_progress_lines_without_a_terminal_end_with_the_exact_counts(tmp_path, fake_server):
    items = _job(tmp_path)
    out = tmp_path / "run"
    proc = stagewise(*_run_args(items, out, fake_server), check=True)
    summary = json.loads((out / "summary.json").read_text())
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("items ")]
    assert lines, proc.stderr
    final = lines[-1]
    assert final.startswith("items 6/6 ")
    assert _calls_in(final) == summary["calls"] > 6
    assert "\x1b[" not in proc.stderr  # plain lines: no cursor movement, no cut-off bar


def test_progress_bar_on_a_terminal_closes_with_the_exact_counts(tmp_path, fake_server):
    items = _job(tmp_path)
    out = tmp_path / "run"
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "stagewise", *_run_args(items, out, fake_server)],
                            stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, cwd=ROOT, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 1 << 16)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    summary = json.loads((out / "summary.json").read_text())
    shown = [ln for ln in re.split(r"[\r\n]", text) if "calls (" in ln]
    assert shown, text
    assert _calls_in(shown[-1]) == summary["calls"]


@pytest.mark.parametrize("graphs", ["chain,chain", "chain,{toml}"])
def test_compare_refuses_two_graphs_of_one_name(tmp_path, graphs):
    items = write_items(tmp_path / "items.jsonl", [{"id": "a", "question": "q"}])
    toml = tmp_path / "mine.toml"
    toml.write_text('name = "chain"\n[[steps]]\nstage = "summary"\n')
    out = tmp_path / "run"
    proc = stagewise("compare", items, "--out", out, "--graphs", graphs.format(toml=toml), "--model",
                     "hosted_vllm/fake", "--api-base", "http://127.0.0.1:9/v1", "--no-progress")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "graph name chain appears more than once" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("option", ["--api-base", "--judge-api-base"])
def test_several_api_bases_without_ray_are_a_usage_error(tmp_path, option):
    """Comma-separated URLs are spread across Ray actors; one process would send to a URL with a comma."""
    items = write_items(tmp_path / "items.jsonl", [{"id": "a", "question": "q"}])
    out = tmp_path / "run"
    bases = ["--api-base", "http://127.0.0.1:9/v1"] if option == "--judge-api-base" else []
    proc = stagewise("generate", items, "--out", out, "--model", "hosted_vllm/fake", *bases,
                     option, "http://127.0.0.1:9/v1,http://127.0.0.1:10/v1", "--no-progress")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and f"{option}: several comma-separated" in lines[0], lines
    assert not out.exists()


def test_judge_api_base_takes_the_judge_calls_of_the_same_model(tmp_path, fake_server_factory):
    """--judge-api-base without --judge-model: the same model on another server judges (it was ignored)."""
    gen, judge = fake_server_factory(), fake_server_factory()
    items = write_items(tmp_path / "items.jsonl", [{"id": f"q{i}", "question": f"Which? ({i})", "choices": ["A", "B"]}
                                                   for i in range(3)])
    out = tmp_path / "run"
    proc = stagewise("generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base", gen.api_base,
                     "--judge-api-base", judge.api_base, "--graph", "stage_beam", "--n", "2", "--no-cache",
                     "--no-progress")
    assert proc.returncode == 0, proc.stderr
    calls = [t for t in read_jsonl(out / "traces.jsonl") if t["event"] == "llm.call"]
    judged = sum(t["role"] in ("judge", "check") for t in calls)
    assert judged and judge.get("/stats")["requests"] == judged
    assert gen.get("/stats")["requests"] == len({t["parent_id"] for t in calls if t["role"] == "generate"})


@pytest.mark.parametrize(("judge", "base", "account"), [
    ("hosted_vllm/judge", "http://127.0.0.1:9/v1", ("hosted_vllm", "http://127.0.0.1:9/v1")),  # one server
    ("openai/judge", "https://api.openai.com/v1", ("openai", "")),  # OpenAI's own endpoint
])
def test_the_judge_takes_api_base_only_on_the_generators_provider(tmp_path, judge, base, account):
    """--judge-model on another provider than --model goes to its provider, not to the generator's
    server (it was sent to --api-base whatever its provider)."""
    from search import resolve
    from stagewise.cli import build_parser
    from stagewise.jobs import Job

    items = write_items(tmp_path / "items.jsonl", [{"id": "a", "question": "q"}])
    args = build_parser().parse_args(["generate", str(items), "--out", str(tmp_path / "o"), "--model",
                                 "hosted_vllm/gen", "--api-base", "http://127.0.0.1:9/v1", "--judge-model", judge])
    job = Job(args, resolve("best_of_n"))
    assert job.judge_backend.url == base + "/chat/completions" and job.accounts[1] == account


BAD_USAGE = [  # (command, extra args or files, environment, what the one line names)
    ("generate", ["--temperature", "nan"], {}, "--temperature must be a number 0 or more"),
    ("generate", ["--judge-temperature", "-1"], {}, "--judge-temperature must be"),
    ("generate", ["--top-p", "1.5"], {}, "--top-p must be more than 0 and at most 1"),
    ("generate", ["--seed", "99999999999999999999999"], {}, "--seed must be 0 to"),
    ("generate", ["--graph", "best_of_n", "--n", "99999999999"], {}, "--n must be at most 128"),
    ("generate", ["--api-base", "localhost:8000"], {}, "--api-base: 'localhost:8000' is not an http(s) URL"),
    ("generate", ["--api-base", "http://127.0.0.1:99999/v1"], {}, "--api-base: 'http://127.0.0.1:99999/v1' is not a URL"),
    ("generate", ["--fallback-model", "hosted_vllm/b", "--fallback-api-base", "ftp://x"], {}, "--fallback-api-base"),
    ("compare", ["--graphs", ","], {}, "names no graph"),
    ("generate", ["--graph", "{dir}/steps.toml"], {}, "step 1 is 1, not a [[steps]] table"),
    ("generate", ["--graph", "{dir}/typo.toml"], {}, "unknown keys nn"),
    ("generate", ["--graph", "{dir}/huge.toml"], {}, "it must be an integer from 1 to 128"),
    ("compare", ["--graphs", "chain,{dir}/escape.toml"], {}, "name '../escaped' must be letters"),
    ("generate", ["--graph", "{dir}/models.toml"], {}, "[models] takes generator and judge"),
    ("generate", ["--graph", "{dir}/g.py:plain"], {}, "plain must be async def plain(ops, settings)"),
    ("generate", [], {"STAGEWISE_PROMPTS": "/nonexistent"}, "STAGEWISE_PROMPTS '/nonexistent' is not a folder"),
    ("generate", [], {"STAGEWISE_PRICE_PER_MTOK": "nan,1"}, "STAGEWISE_PRICE_PER_MTOK='nan,1'"),
    ("generate", ["--cache", "{dir}"], {}, "cannot use it as a cache"),
]


@pytest.mark.parametrize(("command", "extra", "env", "named"), BAD_USAGE)
def test_bad_usage_is_one_line_before_any_row(tmp_path, command, extra, env, named):
    """Each was accepted and failed later (a traceback, NaN in options.json, rows of errors, a graph
    folder outside --out, a run that never ended): now exit 2, one line, no row written."""
    items = write_items(tmp_path / "items.jsonl", [{"id": "a", "question": "q"}])
    (tmp_path / "steps.toml").write_text("steps = [1, 2]\n")
    (tmp_path / "typo.toml").write_text('[[steps]]\nstage = "summary"\nnn = 4\n')
    (tmp_path / "huge.toml").write_text('[[steps]]\nstage = "full"\nn = 99999999999\n')
    (tmp_path / "escape.toml").write_text('name = "../escaped"\n[[steps]]\nstage = "full"\n')
    (tmp_path / "models.toml").write_text('models = "x"\n[[steps]]\nstage = "full"\n')
    (tmp_path / "g.py").write_text("def plain(ops, settings):\n    return ''\n")
    out = tmp_path / "run"
    proc = stagewise(command, items, "--out", out, "--model", "hosted_vllm/fake", "--api-base",
                     "http://127.0.0.1:9/v1", "--no-progress", *[a.format(dir=tmp_path) for a in extra], env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and named in lines[0], proc.stderr
    assert not list(tmp_path.rglob("results.jsonl")) and not list(tmp_path.rglob("options.json"))
    assert not (tmp_path / "escaped").exists()


def test_export_never_replaces_a_file_of_the_run(tmp_path, fake_server):
    items = write_items(tmp_path / "items.jsonl", [{"id": "a", "question": "q"}])
    out = tmp_path / "run"
    stagewise("generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base", fake_server.api_base,
              "--no-progress", check=True)
    before = (out / "results.jsonl").read_bytes()
    proc = stagewise("export", out, "--format", "llava-cot", "--out", out / "results.jsonl")
    assert proc.returncode == 2 and "one of the run's own files" in proc.stderr, proc.stderr
    assert (out / "results.jsonl").read_bytes() == before
