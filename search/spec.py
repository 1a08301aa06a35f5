"""Graphs declared in a TOML file, or written in Python, and loaded by `--graph`.

TOML: an ordered list of steps; each generates `n` candidates of a stage ("summary" ... "conclusion",
"full" for the whole answer, "sentence" for sentence steps until the CONCLUSION closes) and, when n > 1,
keeps the one its judge picks. Models per role may be named too (e.g. a cheaper judge):

    name = "cheap_judge_beam"
    selection = "bracket"            # or "knockout"; default: --selection
    [models]
    judge = "openai/gpt-4o-mini"     # default: --judge-model, else --model
    [[steps]]
    stage = "summary"
    n = 2
    [[steps]]
    stage = "caption"
    n = 4
    judge = "caption"                # default: the stage's own judge ("answer" for "full")

Python: `--graph my_graphs.py:name` loads `async def name(ops, settings) -> str` from that file.
"""
from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import UsageError
from judges.pairwise import judge_kind
from search.graphs import REGISTRY, GraphFn
from stages.tags import STAGES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STEP_KINDS = (*STAGES, "full", "sentence")


@dataclass(frozen=True)
class Step:
    stage: str
    n: int = 1
    judge: str | None = None


@dataclass(frozen=True)
class GraphSpec:
    name: str
    fn: GraphFn
    selection: str | None = None
    models: dict[str, str] = field(default_factory=dict)


def _from_steps(steps: list[Step]) -> GraphFn:
    async def run(ops, settings) -> str:
        text = ""
        for step in steps:
            for _ in range(settings.max_sentences if step.stage == "sentence" else 1):
                candidates = await ops.generate(text, step.stage, step.n)
                judge = step.judge or ("answer" if step.stage == "full" else step.stage)
                prefix = text if step.stage == "sentence" else None
                text = candidates[await ops.select(candidates, judge, prefix=prefix)]
                if step.stage == "sentence" and "</CONCLUSION>" in text.upper():
                    break
        return text
    return run


MAX_N = 128  # candidates per step (and --n): more is a typo, and would hold n replies per step in memory
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a graph's name is its folder under a compare's DIR


def load_toml(path: Path) -> GraphSpec:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read graph file {path}: {exc}") from None
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise UsageError(f"graph file {path}: needs at least one [[steps]] table")
    steps = []
    for i, raw in enumerate(raw_steps, 1):
        if not isinstance(raw, dict):
            raise UsageError(f"graph file {path}: step {i} is {raw!r}, not a [[steps]] table")
        unknown = set(raw) - {"stage", "n", "judge"}
        if unknown:
            raise UsageError(f"graph file {path}: step {i} has unknown keys {', '.join(sorted(unknown))} "
                             "(a step takes stage, n and judge)")
        stage = str(raw.get("stage", "")).lower()
        if stage not in STEP_KINDS:
            raise UsageError(f"graph file {path}: step {i} has stage {stage!r}; use one of {', '.join(STEP_KINDS)}")
        n = raw.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
            raise UsageError(f"graph file {path}: step {i} has n={n!r}; it must be an integer from 1 to {MAX_N}")
        judge = raw.get("judge")
        try:
            judge = None if judge is None else judge_kind(str(judge))
        except ValueError as exc:
            raise UsageError(f"graph file {path}: step {i}: {exc}") from None
        steps.append(Step(stage, n, judge))
    selection = data.get("selection")
    if selection not in (None, "bracket", "knockout"):
        raise UsageError(f"graph file {path}: selection must be bracket or knockout")
    models = data.get("models") or {}
    if not isinstance(models, dict) or set(models) - {"generator", "judge"} \
            or not all(isinstance(v, str) and v.strip() for v in models.values()):
        raise UsageError(f"graph file {path}: [models] takes generator and judge, each a model string")
    return GraphSpec(graph_name(str(data.get("name") or path.stem), path), _from_steps(steps), selection, models)


def graph_name(name: str, source: object) -> str:
    """A graph's name as a folder name: it names DIR/<name>/ in a compare, so never a path."""
    if not NAME.fullmatch(name):
        raise UsageError(f"graph {source}: name {name!r} must be letters, digits, '_', '-' or '.', starting "
                         "with a letter or digit (it names the graph's folder)")
    return name


def load_python(ref: str) -> GraphSpec:
    file, _, name = ref.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"graph {ref!r}: no such file {file}")
    spec = importlib.util.spec_from_file_location(f"stagewise_user_graph_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        raise UsageError(f"graph {ref!r}: importing {file} failed: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise UsageError(f"graph {ref!r}: {file} defines no function {name!r}")
    try:
        inspect.signature(fn).bind(None, None)
        takes_ops_and_settings = True
    except (TypeError, ValueError):
        takes_ops_and_settings = False
    if not inspect.iscoroutinefunction(fn) or not takes_ops_and_settings:
        raise UsageError(f"graph {ref!r}: {name} must be async def {name}(ops, settings)")
    return GraphSpec(graph_name(name, ref), fn)


def resolve(graph: str) -> GraphSpec:
    """A built-in name, a TOML file, or FILE.py:function."""
    if graph in REGISTRY:
        return GraphSpec(graph, REGISTRY[graph])
    if graph.endswith(".toml"):
        return load_toml(Path(graph))
    if ".py:" in graph:
        return load_python(graph)
    raise UsageError(f"unknown graph {graph!r}: choose one of {', '.join(REGISTRY)}, a .toml file or FILE.py:function")
