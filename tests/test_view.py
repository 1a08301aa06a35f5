"""`stagewise view DIR` over HTTP: the CLI started as a user starts it, its JSON API asked as the page asks.

The run folders here are written by hand in the documented formats (docs/formats.md, engine/trace_events.py)
so every filter's answer is known: the expected ids are computed from the rows the test wrote.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, stagewise
from engine.trace_events import parse_event

GRAPHS = ("chain", "stage_beam")
ITEMS = 60


class ViewServer:
    """`python -m stagewise view DIR --port 0 --no-browser`; its first stdout line gives the address."""

    def __init__(self, folder: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "stagewise", "view", str(folder), "--port", "0",
                                      "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=ROOT, env={**os.environ})
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"stagewise view did not start: {self.proc.stderr.read()}")
        self.url = line.split()[2]

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes, str]:
        request = urllib.request.Request(self.url.rstrip("/") + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "")

    def json(self, path: str, **params) -> dict:
        status, body, _ = self.get(path + ("?" + urllib.parse.urlencode(params) if params else ""))
        assert status == 200, (path, params, status, body[:300])
        return json.loads(body)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _row(graph: str, i: int, image: str | None) -> dict:
    ok = not (graph == "stage_beam" and i % 10 == 9)
    right = (i % 2 == 0) if graph == "chain" else (i % 3 == 0)
    row = {"id": f"q{i:03d}", "status": "ok" if ok else "error", "graph": graph, "model": "openai/m",
           "judge_model": "openai/m", "question": f"Which bar is tallest in chart {i}?", "image": image,
           "reference": "B", "usage": {"calls": 1 + (i * 7) % 13, "cache_hits": 0, "prompt_tokens": 100 + i,
                                       "completion_tokens": 10, "cost_usd": round(0.001 * ((i * 37) % 60), 6),
                                       "cost_uncached_usd": 0.0, "attempts": 1, "failed_attempts": 0},
           "latency_s": float((i * 11) % 47)}
    if ok:
        row.update(error=None, error_cause=None, answer="B" if right else "A", correct=right,
                   stages={"summary": "s", "caption": "c", "reasoning": "r", "conclusion": "B" if right else "A"},
                   repairs=["caption: no opening tag, took the whole reply"] if i % 11 == 0 else [])
    else:
        cause = "timeout" if i % 20 == 9 else "rate_limit"
        row.update(error=f"item q{i:03d}: model call failed ({cause})", error_cause=cause)
    return row


def _events(graph: str, i: int) -> list[dict]:
    """A stage_beam-like item with two caption candidates and one verdict (spans as a run writes them)."""
    item, trace = f"q{i:03d}", f"{i:032x}"
    ids = {k: f"{i:08x}{n:08x}" for n, k in enumerate(("root", "stage", "gen0", "gen1", "select", "verdict",
                                                       "judge", "retry"))}
    base = {"ts": 1.0, "item_id": item, "trace_id": trace, "graph": graph}
    lab = {**base, "stage": "caption"}
    vlab = {**lab, "selection": "bracket", "pair": [0, 1]}
    call = {"role": "generate", "model": "openai/m", "n": 2, "prompt_tokens": 50, "completion_tokens": 9,
            "cost_usd": 0.0001, "latency_s": 0.5, "cache": "miss", "attempt": 1, "status": "ok", "error": None,
            "finish_reason": "stop"}
    events = [{**base, "span_id": ids["root"], "parent_id": None, "event": "item.start", "attempt": 1}]
    if i % 7 == 0:  # a retried call: trouble at the caption stage
        events.append({**lab, "span_id": ids["retry"], "parent_id": ids["stage"], "event": "llm.call",
                       **{**call, "status": "retry", "error": "rate_limit: slow down", "finish_reason": None},
                       "candidate": 0, "sample": 0})
    for c in (0, 1):
        events.append({**lab, "span_id": ids[f"gen{c}"], "parent_id": ids["stage"], "event": "llm.call", **call,
                       "candidate": c, "sample": c, "text": f"caption text {c} of {item}"})
        events.append({**lab, "span_id": ids["stage"], "parent_id": ids["root"], "event": "candidate", "index": c,
                       "text": f"caption text {c} of {item}", "prefix_len": 0, "repairs": []})
    span = {"start_ts": 1.0, "end_ts": 2.0, "status": "ok", "error": None}
    events += [
        {**lab, "span_id": ids["stage"], "parent_id": ids["root"], "event": "span.end", "kind": "stage",
         "name": "caption", "n": 2, "prefix_len": 0, **span},
        {**vlab, "span_id": ids["judge"], "parent_id": ids["verdict"], "event": "llm.call",
         **{**call, "role": "judge", "n": 1}, "candidate": 0, "sample": 0, "text": "Response 2. It names the bars.",
         "judge_attempt": 1},
        {**vlab, "span_id": ids["verdict"], "parent_id": ids["select"], "event": "span.end", "kind": "verdict",
         "name": "caption", "winner": 1, "parse": "ok", **span},
        {**vlab, "span_id": ids["verdict"], "parent_id": ids["select"], "event": "judge.verdict", "round": 1,
         "winner": 1, "parse": "ok", "reason": f"candidate 1 names the bars of {item}",
         "outputs": ["Response 2. It names the bars."]},
        {**lab, "selection": "bracket", "span_id": ids["select"], "parent_id": ids["stage"], "event": "span.end",
         "kind": "select", "name": "caption", "n": 2, "winner": 1, "rounds": 1, "mode": "bracket", **span},
        {**base, "span_id": ids["root"], "parent_id": None, "event": "item.end", "status": "ok", "error": None,
         "error_cause": None, "latency_s": 1.0, "start_ts": 0.0, "usage_calls": 3, "usage_cache_hits": 0,
         "usage_prompt_tokens": 150, "usage_completion_tokens": 27, "usage_cost_usd": 0.0003,
         "usage_cost_uncached_usd": 0.0003, "usage_attempts": 2, "usage_failed_attempts": 0}]
    for e in events:
        parse_event(e)  # the fixture keeps to the documented format
    return events


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_compare(root: Path) -> dict[str, list[dict]]:
    """A compare folder: DIR/<graph>/results.jsonl + traces.jsonl; item q000's image is a real PNG, q001's
    row names /etc/passwd (not an image), q002's a missing PNG."""
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(root / "images" / "q000.png")
    images = {0: str(root / "images" / "q000.png"), 1: "/etc/passwd", 2: str(root / "images" / "none.png")}
    rows = {}
    for graph in GRAPHS:
        (root / graph).mkdir()
        rows[graph] = [_row(graph, i, images.get(i)) for i in range(ITEMS)]
        (root / graph / "results.jsonl").write_text(_jsonl(rows[graph]))
        (root / graph / "traces.jsonl").write_text(_jsonl([e for i in range(ITEMS) for e in _events(graph, i)]))
    (root / "report.json").write_text(json.dumps({"graphs": [{"graph": g, "judge_agreement": 0.75} for g in GRAPHS]}))
    return rows


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("view") / "run"
    rows = write_compare(root)
    server = ViewServer(root)
    yield server, rows, root
    server.stop()


def _all_ids(server: ViewServer, **params) -> list[tuple[str, str]]:
    got, page = [], 1
    while True:
        data = server.json("/api/items", per_page=7, page=page, **params)
        got += [(it["graph"], it["id"]) for it in data["items"]]
        if page * 7 >= data["total"]:
            assert len(got) == data["total"]
            return got
        page += 1


def test_run_figures(compare_run):
    server, rows, root = compare_run
    info = server.json("/api/run")
    assert info["compare"] is True and info["graph_names"] == list(GRAPHS)
    beam = next(g for g in info["graphs"] if g["graph"] == "stage_beam")
    errors = [r for r in rows["stage_beam"] if r["status"] != "ok"]
    assert beam["items"] == ITEMS and beam["ok"] == ITEMS - len(errors)
    assert beam["errors_by_cause"] == {"rate_limit": 3, "timeout": 3}
    assert beam["calls"] == sum(r["usage"]["calls"] for r in rows["stage_beam"])
    assert beam["cost_usd"] == pytest.approx(sum(r["usage"]["cost_usd"] for r in rows["stage_beam"]))
    assert beam["report"]["judge_agreement"] == 0.75  # the compare's judge figures reach the page
    assert info["stages"] == ["caption"] and info["causes"] == ["rate_limit", "timeout"]


@pytest.mark.parametrize("params, keep", [
    ({"status": "error"}, lambda g, r, rows: r["status"] != "ok"),
    ({"graph": "chain", "correct": "1"}, lambda g, r, rows: g == "chain" and r.get("correct") is True),
    ({"correct": "0"}, lambda g, r, rows: r.get("correct") is False),
    ({"cause": "timeout"}, lambda g, r, rows: r.get("error_cause") == "timeout"),
    ({"stage": "caption"},  # a retried call (every 7th item) or a repaired caption (every 11th)
     lambda g, r, rows: int(r["id"][1:]) % 7 == 0 or int(r["id"][1:]) % 11 == 0 and r["status"] == "ok"),
    ({"q": "CHART 4"}, lambda g, r, rows: "chart 4" in r["question"].lower()),
    ({"graph": "stage_beam", "right": "stage_beam", "wrong": "chain"},  # the graphs disagree
     lambda g, r, rows: g == "stage_beam" and r.get("correct") is True
     and rows["chain"][int(r["id"][1:])].get("correct") is False),
    ({"right": "chain", "wrong": "stage_beam"},
     lambda g, r, rows: rows["chain"][int(r["id"][1:])].get("correct") is True
     and rows["stage_beam"][int(r["id"][1:])].get("correct") is False),
])
def test_filters_match_the_rows(compare_run, params, keep):
    server, rows, _ = compare_run
    expected = {(g, r["id"]) for g in GRAPHS for r in rows[g] if keep(g, r, rows)}
    assert expected, "the case must select something"
    got = _all_ids(server, **params)
    assert set(got) == expected and len(got) == len(expected)


@pytest.mark.parametrize("sort, key", [("cost", lambda r: r["usage"]["cost_usd"]),
                                       ("latency", lambda r: r["latency_s"]),
                                       ("calls", lambda r: r["usage"]["calls"])])
def test_sort_and_pagination(compare_run, sort, key):
    server, rows, _ = compare_run
    for order, reverse in (("desc", True), ("asc", False)):
        got = _all_ids(server, graph="chain", sort=sort, order=order)
        by = {r["id"]: key(r) for r in rows["chain"]}
        values = [by[i] for _, i in got]
        assert values == sorted(values, reverse=reverse) and len(set(got)) == ITEMS
        # ties broken by id, so a page boundary never repeats or drops an item
        assert got == sorted(got, key=lambda gi: (-by[gi[1]] if reverse else by[gi[1]], gi[1]))
    beyond = server.json("/api/items", per_page=50, page=99)
    assert beyond["items"] == [] and beyond["total"] == 2 * ITEMS
    assert server.get("/api/items?page=x")[0] == 400
    assert server.get("/api/items?graph=nope")[0] == 404


def test_compare_list_shows_each_graph_verdict(compare_run):
    server, rows, _ = compare_run
    item = server.json("/api/items", q="q004", graph="chain")["items"][0]
    assert item["across"] == {"chain": {"status": "ok", "correct": True}, "stage_beam": {"status": "ok", "correct": False}}


def test_item_tree_from_spans(compare_run):
    server, rows, _ = compare_run
    data = server.json("/api/item", id="q007")
    assert [v["graph"] for v in data["graphs"]] == list(GRAPHS)  # side by side, in the compare's order
    view = data["graphs"][1]
    assert view["row"] == rows["stage_beam"][7]
    (step,) = view["tree"]["steps"]
    assert step["stage"] == "caption" and step["selection"] == "bracket" and step["winner"] == 1
    assert [c["text"] for c in step["candidates"]] == ["caption text 0 of q007", "caption text 1 of q007"]
    assert [c["winner"] for c in step["candidates"]] == [False, True]
    assert [c["status"] for c in step["candidates"][0]["calls"]] == ["retry", "ok"]  # the retried attempt shows
    (verdict,) = step["verdicts"]
    assert verdict["pair"] == [0, 1] and verdict["parse"] == "ok" and verdict["round"] == 1
    assert verdict["reason"] == "candidate 1 names the bars of q007"
    assert [c["role"] for c in verdict["calls"]] == ["judge"]
    only = server.json("/api/item", id="q007", graph="chain")
    assert [v["graph"] for v in only["graphs"]] == ["chain"]
    assert server.get("/api/item?id=nope")[0] == 404


def test_older_traces_without_spans_still_make_a_tree(tmp_path):
    """Traces written before span.end and candidate events: steps are told apart by the order of events,
    the winner by the last verdict, the winner's text taken from the row."""
    run = tmp_path / "old"
    run.mkdir()
    row = {"id": "a", "status": "ok", "error": None, "error_cause": None, "graph": "stage_beam", "question": "Q?",
           "image": None, "reference": "3", "answer": "3", "correct": True, "latency_s": 1.0,
           "stages": {"summary": "plan", "caption": "two bars", "reasoning": "so 3", "conclusion": "3"},
           "usage": {"calls": 6, "cost_usd": 0.0, "prompt_tokens": 1, "completion_tokens": 1}}
    (run / "results.jsonl").write_text(json.dumps(row) + "\n")
    base = {"ts": 1.0, "item_id": "a", "trace_id": "00ab", "graph": "stage_beam", "event": "llm.call", "status": "ok",
            "cache": "miss", "attempt": 1}
    events = []
    for n, stage in enumerate(("summary", "caption")):
        events += [{**base, "stage": stage, "role": "generate", "candidate": c, "span_id": f"{n}g{c}",
                    "parent_id": f"{n}s"} for c in (0, 1)]
        events += [{**base, "stage": stage, "role": "judge", "pair": [0, 1], "span_id": f"{n}j", "parent_id": f"{n}v"},
                   {**base, "event": "judge.verdict", "stage": stage, "pair": [0, 1], "winner": n, "parse": "ok",
                    "reason": f"reason {stage}", "span_id": f"{n}v", "parent_id": f"{n}x"}]
    events.append({**base, "event": "item.end", "span_id": "r", "parent_id": None, "latency_s": 1.0})
    (run / "traces.jsonl").write_text(_jsonl(events))
    server = ViewServer(run)
    try:
        steps = server.json("/api/item", id="a")["graphs"][0]["tree"]["steps"]
    finally:
        server.stop()
    assert [s["stage"] for s in steps] == ["summary", "caption"]
    assert [s["winner"] for s in steps] == [0, 1]
    assert [[c["text"] for c in s["candidates"]] for s in steps] == [["plan", None], [None, "two bars"]]
    assert [s["verdicts"][0]["reason"] for s in steps] == ["reason summary", "reason caption"]
    assert all(len(s["verdicts"][0]["calls"]) == 1 for s in steps)


def test_images_only_as_rows_name_them(compare_run):
    server, _, root = compare_run
    status, body, kind = server.get("/api/image?graph=chain&id=q000")
    assert status == 200 and kind == "image/png" and body == (root / "images" / "q000.png").read_bytes()
    assert server.get("/api/image?graph=chain&id=q001")[0] == 403  # the row names /etc/passwd: not an image
    assert server.get("/api/image?graph=chain&id=q002")[0] == 404  # named, missing
    assert server.get("/api/image?graph=chain&id=../../../etc/passwd")[0] == 404  # ids are looked up, not paths
    assert server.get("/api/image?graph=../../../etc&id=passwd")[0] == 404
    assert server.get("/api/image?id=q000")[0] == 400  # which graph's row, in a compare folder


@pytest.mark.parametrize("path", ["/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                                  "/static/..%2f..%2f..%2fetc%2fpasswd", "/results.jsonl", "/chain/results.jsonl",
                                  "/.view-index.sqlite", "/static/", "/etc/passwd"])
def test_nothing_else_is_served(compare_run, path):
    server, _, _ = compare_run
    url = urllib.parse.urlsplit(server.url)
    with __import__("socket").create_connection((url.hostname, url.port), timeout=10) as s:  # the raw path, unnormalised
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.split(b" ", 2)[1] in (b"404", b"403"), reply[:200]
    assert b"root:" not in reply


def test_a_foreign_host_is_refused(compare_run):
    server, _, _ = compare_run
    assert server.get("/api/run", headers={"Host": "evil.example:8300"})[0] == 403
    assert server.get("/", headers={"Host": "localhost"})[0] == 200


def test_index_follows_appends_and_rewrites(tmp_path):
    """A resumed run appends: the next request sees the new rows; a half-written line waits; a rerun
    that rewrites results.jsonl (fewer rows) is indexed again; a second `view` reuses the index."""
    run = tmp_path / "run"
    run.mkdir()
    rows = [_row("chain", i, None) for i in range(10)]
    (run / "results.jsonl").write_text(_jsonl(rows[:4]))
    (run / "traces.jsonl").write_text(_jsonl([e for i in range(4) for e in _events("chain", i)]))
    server = ViewServer(run)
    try:
        assert server.json("/api/items")["total"] == 4
        with open(run / "results.jsonl", "a") as f:
            f.write(_jsonl(rows[4:9]) + json.dumps(rows[9])[:40])  # the last row still being written
        with open(run / "traces.jsonl", "a") as f:
            f.write(_jsonl(_events("chain", 5)))
        assert server.json("/api/items")["total"] == 9
        assert server.json("/api/item", id="q005")["graphs"][0]["tree"]["steps"][0]["winner"] == 1
        with open(run / "results.jsonl", "a") as f:
            f.write(json.dumps(rows[9])[40:] + "\n")
        assert server.json("/api/items", per_page=1, sort="latency")["total"] == 10
        replaced = run / "results.new"
        replaced.write_text(_jsonl(rows[:3]))
        os.replace(replaced, run / "results.jsonl")  # as a rerun replaces it (engine/jsonl.py)
        listed = server.json("/api/items")
        assert listed["total"] == 3 and [i["id"] for i in listed["items"]] == ["q000", "q001", "q002"]
    finally:
        server.stop()
    from stagewise.view.folder import open_folder
    from stagewise.view.index import Index

    index = Index(open_folder(run))  # what a second `stagewise view` opens: nothing left to read
    try:
        assert index.refresh() == {"rows": 0, "trace_lines": 0}
        assert index.list_items({})["total"] == 3
    finally:
        index.close()


def test_not_a_run_folder(tmp_path):
    proc = stagewise("view", tmp_path, "--no-browser", "--port", "0", timeout=60)
    assert proc.returncode == 2
    assert "not a run folder" in proc.stderr and str(tmp_path) in proc.stderr


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory):
    """A run folder with results.jsonl and no traces.jsonl; two rows name links called *.png: one to a
    real PNG outside the folder (as ITEMS.jsonl's images are), one to a secret text file."""
    tmp = tmp_path_factory.mktemp("bare")
    run, elsewhere = tmp / "run", tmp / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    Image.new("RGB", (8, 8), (0, 90, 200)).save(elsewhere / "chart.png")
    (elsewhere / "secret.txt").write_text("root:x:0:0:secret\n")
    (run / "pic.png").symlink_to(elsewhere / "chart.png")
    (run / "leak.png").symlink_to(elsewhere / "secret.txt")
    rows = [_row("chain", 0, "pic.png"), _row("chain", 1, "leak.png"), _row("chain", 2, None)]
    (run / "results.jsonl").write_text(_jsonl(rows))
    server = ViewServer(run)
    yield server, rows, elsewhere
    server.stop()


def test_a_link_named_like_an_image_must_lead_to_an_image(bare_run):
    server, _, elsewhere = bare_run
    status, body, _ = server.get("/api/image?id=q000")
    assert status == 200 and body == (elsewhere / "chart.png").read_bytes()
    status, body, _ = server.get("/api/image?id=q001")
    assert status == 403 and b"secret" not in body


def test_an_item_without_traces_shows_its_row(bare_run):
    server, rows, _ = bare_run
    (view,) = server.json("/api/item", id="q002")["graphs"]
    assert view["row"] == rows[2] and view["tree"]["steps"] == [] and view["tree"]["attempts"] == []


def test_a_page_number_too_big_for_sqlite_is_a_400(bare_run):
    server, _, _ = bare_run
    status, body, _ = server.get("/api/items?page=99999999999999999999")
    assert status == 400 and b"page must be at most" in body
    assert server.json("/api/items", page=2)["items"] == []  # past the end, still just empty


def test_a_malformed_row_costs_its_cells_not_the_view(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [_row("chain", i, None) for i in range(4)]
    rows[1].update(latency_s="n/a", usage="none", repairs=7)
    rows[2].update(usage={"calls": "many", "cost_usd": [1], "prompt_tokens": 10 ** 30, "completion_tokens": 1},
                   status=["ok"], error_cause={"kind": "x"})
    (run / "results.jsonl").write_text(_jsonl(rows))
    (run / "traces.jsonl").write_text(_jsonl([e for i in range(4) for e in _events("chain", i)]))
    server = ViewServer(run)
    try:
        listed = {it["id"]: it for it in server.json("/api/items", sort="latency")["items"]}
        assert sorted(listed) == ["q000", "q001", "q002", "q003"]
        assert listed["q001"]["latency_s"] is None and listed["q001"]["calls"] == 0
        assert listed["q002"]["calls"] is None and listed["q002"]["cost_usd"] is None
        assert listed["q002"]["tokens"] is None and listed["q003"]["latency_s"] == rows[3]["latency_s"]
        info = server.json("/api/run")["graphs"][0]
        assert info["items"] == 4 and info["calls"] == sum(rows[i]["usage"]["calls"] for i in (0, 3))
        assert server.json("/api/item", id="q001")["graphs"][0]["row"] == rows[1]
    finally:
        server.stop()



@pytest.mark.parametrize("args, named", [
    (("DIR", "--port", "-1"), "--port"), (("DIR", "--port", "99999"), "--port"), (("DIR", "--host", ""), "--host"),
    (("DIR", "--port", "BUSY"), "--host or --port"), (("FILE", "--port", "0"), "is a file, not a run folder")])
def test_bad_view_usage_is_one_line_and_writes_no_index(tmp_path, args, named):
    """Refused before the index is written: a port out of range, an empty host (every interface), an
    address in use, a file for DIR; one `stagewise: error:` line, no traceback."""
    import socket

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(_jsonl([_row("chain", 0, None)]))
    with socket.create_server(("127.0.0.1", 0)) as busy:
        put = {"DIR": run, "FILE": run / "results.jsonl", "BUSY": busy.getsockname()[1]}
        proc = stagewise("view", *(put.get(a, a) for a in args), "--no-browser", timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("stagewise: error: "), proc.stderr
    assert named in lines[0] and proc.stdout == ""
    assert sorted(p.name for p in run.iterdir()) == ["results.jsonl"]  # no .view-index.sqlite
