"""Reading ITEMS.jsonl: repeated ids, undecodable bytes, a BOM, bad lines next to real ids."""
from __future__ import annotations

from conftest import read_jsonl, stagewise, write_items

from engine.items import BadLine, Item, read_items


def _generate(items, out, fake_server, *extra):
    return stagewise("generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base",
                     fake_server.api_base, "--no-progress", *extra)


def test_a_repeated_id_is_skipped_and_traced_while_the_first_is_in_flight(tmp_path, fake_server):
    # at concurrency 4 the second "a" is read while the first is still running, so only `seen` catches it
    items = write_items(tmp_path / "items.jsonl", [
        {"id": "a", "question": "first"}, {"id": "b", "question": "q"},
        {"id": "a", "question": "second"}, {"id": "c", "question": "q"}])
    out = tmp_path / "run"
    proc = _generate(items, out, fake_server, "--concurrency", "4")
    assert proc.returncode == 0, proc.stderr
    rows = read_jsonl(out / "results.jsonl")
    assert sorted(r["id"] for r in rows) == ["a", "b", "c"]
    assert next(r for r in rows if r["id"] == "a")["question"] == "first"
    dups = [e for e in read_jsonl(out / "traces.jsonl") if e["event"] == "item.duplicate"]
    assert len(dups) == 1 and dups[0]["item_id"] == "a"
    assert dups[0]["trace_id"] is None and dups[0]["span_id"] is None and dups[0]["parent_id"] is None


def test_undecodable_bytes_spoil_only_their_line_and_a_bom_is_skipped(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_bytes(b'\xef\xbb\xbf{"id": "first", "question": "Q1"}\n'
                      b'{"id": "latin1", "question": "caf\xe9"}\n'
                      b'{"id": "last", "question": "Q3"}\n')
    entries = list(read_items(items))
    assert [e.id for e in entries] == ["first", "line-2", "last"]
    assert isinstance(entries[0], Item) and isinstance(entries[2], Item)
    assert isinstance(entries[1], BadLine) and "line 2 is not valid UTF-8" in entries[1].error

    # the whole run, and the report that reads ITEMS.jsonl's answers again, get past it too
    out = tmp_path / "run"
    proc = stagewise("compare", items, "--out", out, "--graphs", "chain", "--model", "hosted_vllm/fake",
                     "--api-base", "http://127.0.0.1:9/v1", "--max-retries", "0", "--no-progress")
    assert proc.returncode == 3 and (out / "report.md").exists(), proc.stderr
    rows = {r["id"]: r for r in read_jsonl(out / "chain" / "results.jsonl")}
    assert sorted(rows) == ["first", "last", "line-2"] and rows["line-2"]["error_cause"] == "input"


def test_a_bad_line_never_shares_its_id_with_a_real_item(tmp_path, fake_server):
    items = write_items(tmp_path / "items.jsonl", [
        {"id": "line-2", "question": "real, before the bad line"},
        "{not json",                                   # line 2
        {"id": 1.5, "question": "an id that is no id"},  # line 3
        {"id": "line-3", "question": "real, after the bad line"},
    ])
    out = tmp_path / "run"
    proc = _generate(items, out, fake_server, "--concurrency", "4")
    assert proc.returncode == 3 and "2 item(s) ended in error (2 input)" in proc.stderr, proc.stderr
    rows = {r["id"]: r for r in read_jsonl(out / "results.jsonl")}
    assert set(rows) == {"line-2", "line-2#2", "line-3#2", "line-3"}
    assert rows["line-2"]["status"] == rows["line-3"]["status"] == "ok"
    assert "line 2 is not valid JSON" in rows["line-2#2"]["error"]
    assert "line 3 (id line-3#2) is not a valid item" in rows["line-3#2"]["error"]
    # a rerun finds every line done: the made-up ids are the same each time
    again = _generate(items, out, fake_server, "--retry-errors", "none")
    assert again.returncode == 3 and len(read_jsonl(out / "results.jsonl")) == 4


def test_the_progress_total_counts_lines_that_hold_something(tmp_path):
    from engine.runner import count_lines

    items = tmp_path / "items.jsonl"
    items.write_bytes(b'{"id": "a", "question": "Q"}\n\n   \n{"id": "b", "question": "Q"}')  # no last newline
    assert count_lines(items) == 2 == len(list(read_items(items)))
