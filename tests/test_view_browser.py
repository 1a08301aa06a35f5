"""`stagewise view` in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, driven
by Selenium) on a real compare run of the embedded model (`stagewise demo`). Filters the list, opens an
item, and checks what a person sees: the figures, the rows, the winning candidates marked as the trace
says, the judges' reasons, the image loaded.

Without Chromium these tests skip, except under CI=true, where they fail (.ci/run installs it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import read_jsonl, stagewise
from test_view import ViewServer

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
GRAPHS = ("chain", "best_of_n", "stage_beam")


def _need(found: bool, what: str) -> None:
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is missing; .ci/run installs it (apt-get install chromium chromium-driver)")
        pytest.skip(f"{what} is missing (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    _need(Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file(), "Chromium or its driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need(False, "selenium (the dev extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with both paths given, Selenium Manager downloads nothing
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1500,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One real compare run (chain, best_of_n, stage_beam; 6 items, N=2) shared by this module's tests."""
    out = tmp_path_factory.mktemp("view-demo") / "demo"
    stagewise("demo", "--items", "6", "--n", "2", "--graphs", ",".join(GRAPHS), "--out", out, "--no-progress",
              check=True, timeout=600)
    server = ViewServer(out)
    yield server, out
    server.stop()


def _open(driver, url: str, ready: str):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.find_element("css selector", "body").get_attribute("data-ready") == ready)


def _choose(driver, name: str, value: str, ready: str = "/"):
    """Pick an option in a filter; the page reloads the list (the body's data-ready is cleared meanwhile)."""
    from selenium.webdriver.support.ui import Select, WebDriverWait

    Select(driver.find_element("id", f"f-{name}")).select_by_value(value)
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element("css selector", "body").get_attribute("data-ready") == ready
        and Select(d.find_element("id", f"f-{name}")).first_selected_option.get_attribute("value") == value)


def _rows(driver) -> list[tuple[str, str]]:
    return [(r.get_attribute("data-graph"), r.get_attribute("data-id"))
            for r in driver.find_elements("css selector", "#items tbody tr.item-row")]


def _results(out: Path, graph: str) -> dict[str, dict]:
    return {r["id"]: r for r in read_jsonl(out / graph / "results.jsonl")}


def test_run_page_figures_and_filters(browser, demo_run):
    server, out = demo_run
    _open(browser, server.url + "#/", "/")
    figures = browser.find_elements("css selector", "#run-figures tbody tr")
    assert [f.find_element("css selector", "b").text for f in figures] == list(GRAPHS)
    for row, graph in zip(figures, GRAPHS):
        summary = json.loads((out / graph / "summary.json").read_text())
        cells = [c.text for c in row.find_elements("css selector", "td")]
        assert cells[1] == str(summary["items"]) and cells[5] == f"{summary['calls']:,}"
        assert not any("[object" in c for c in cells), cells  # only figures, never a nested object
    assert len(_rows(browser)) == 18  # 6 items in 3 graphs, one page
    _choose(browser, "graph", "stage_beam")
    beam = _results(out, "stage_beam")
    assert sorted(_rows(browser)) == sorted(("stage_beam", i) for i in beam)
    _choose(browser, "correct", "1")
    assert sorted(_rows(browser)) == sorted(("stage_beam", i) for i, r in beam.items() if r.get("correct") is True)
    assert "matching" in browser.find_element("id", "list-count").text


def test_disagreement_filter(browser, demo_run):
    server, out = demo_run
    _open(browser, server.url + "#/", "/")
    chain, beam = _results(out, "chain"), _results(out, "stage_beam")
    _choose(browser, "disagree", "stage_beam|chain")  # chain wrong, stage_beam right
    expected = {i for i in beam if beam[i].get("correct") is True and chain[i].get("correct") is False}
    assert {i for _, i in _rows(browser)} == expected
    _choose(browser, "disagree", "chain|stage_beam")  # chain right, stage_beam wrong
    expected = {i for i in beam if chain[i].get("correct") is True and beam[i].get("correct") is False}
    assert {i for _, i in _rows(browser)} == expected


def _last_verdicts(out: Path, item_id: str) -> tuple[dict[str, int], list[str]]:
    """From stage_beam's traces.jsonl: each stage's final verdict winner, and every reason given."""
    winners, reasons = {}, []
    for e in read_jsonl(out / "stage_beam" / "traces.jsonl"):
        if e.get("item_id") == item_id and e["event"] == "judge.verdict":
            winners[e["stage"]] = e["winner"]  # verdicts are written in order: the last one decides
            if e.get("reason"):
                reasons.append(e["reason"])
    return winners, reasons


def test_item_page_shows_the_tree(browser, demo_run):
    from selenium.webdriver.support.ui import WebDriverWait

    server, out = demo_run
    _open(browser, server.url + "#/?graph=stage_beam", "/")
    link = browser.find_element("css selector", "#items tr.item-row[data-graph=stage_beam] a.item-link")
    item_id = link.text
    link.click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element("css selector", "body").get_attribute("data-ready") == "/item")
    assert browser.find_element("id", "item-id").text == item_id
    row = _results(out, "stage_beam")[item_id]
    assert row["question"] in browser.find_element("css selector", ".question").text
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "const i = document.getElementById('item-image'); return i && i.complete"))
    assert browser.execute_script("return document.getElementById('item-image').naturalWidth") > 0
    column = browser.find_element("css selector", ".graph-col[data-graph=stage_beam]")
    stages = column.find_element("css selector", "dl.stages").text
    assert row["stages"]["reasoning"] in stages and row["answer"] in stages
    winners, reasons = _last_verdicts(out, item_id)
    assert winners and reasons, "stage_beam with N=2 judges every stage"
    steps = column.find_elements("css selector", "section.step")
    assert [s.get_attribute("data-stage") for s in steps] == ["summary", "caption", "reasoning", "conclusion"]
    for step in steps:
        marked = step.find_elements("css selector", ".candidate.winner")
        assert len(marked) == 1, step.text  # exactly one candidate highlighted
        assert marked[0].get_attribute("data-index") == str(winners[step.get_attribute("data-stage")])
        assert "chosen" in marked[0].text
        assert len(step.find_elements("css selector", ".candidate")) == 2
    shown = [r.text.strip("“”") for r in column.find_elements("css selector", ".verdict .reason")]
    assert sorted(shown) == sorted(reasons)
    # the same item in every graph, side by side
    assert [c.get_attribute("data-graph") for c in browser.find_elements("css selector", ".graph-col")] == ["stage_beam"]
    browser.find_element("id", "side-by-side").click()
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements("css selector", ".graph-col")) == 3)
    assert [c.get_attribute("data-graph") for c in browser.find_elements("css selector", ".graph-col")] == list(GRAPHS)


def test_page_loads_nothing_from_elsewhere(browser, demo_run):
    """The page asks nothing of any host but its own: every resource the browser loaded came from it."""
    server, _ = demo_run
    _open(browser, server.url + "#/item?id=" + _first_id(demo_run[1]), "/item")
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(server.url.rstrip("/")) for u in urls), urls


def _first_id(out: Path) -> str:
    return read_jsonl(out / "stage_beam" / "results.jsonl")[0]["id"]
