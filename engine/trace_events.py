"""One pydantic model per event of DIR/traces.jsonl: the format's contract, in code.

docs/traces.md describes the same events in words; the tests validate every event that real runs
write against these models, so a field added to a trace without a place here fails them. Readers
(the viewer, `stagewise export-otel`) may use `parse_event` to read a line.

Three events define spans, each with a span id unique in the file: `item.start` (the item's root,
closed by `item.end` with the same span id), `span.end` (a stage, select, verdict or check span,
written when it closes) and `llm.call` (each call attempt or returned sample is a leaf span). The
others (`candidate`, `judge.verdict`, `judge.check`, `llm.fallback`) belong to the span named by
their `span_id` and open none.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

TraceId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
SpanId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
Stage = str  # summary, caption, reasoning, conclusion, full, sentence; judges: those, sentence, answer
Parse = Literal["ok", "logprob", "tie", "fallback", "forfeit", "precheck", "same"]
Selection = Literal["bracket", "knockout"]


class _Event(BaseModel):
    """Fields of every event inside an item (and the labels its enclosing spans copy onto it)."""

    model_config = ConfigDict(extra="forbid")

    ts: float  # Unix time, seconds, when the event was written
    item_id: str
    trace_id: TraceId  # fresh for each attempt at an item
    span_id: SpanId
    parent_id: SpanId | None
    graph: str | None = None
    # labels of the enclosing spans
    stage: Stage | None = None  # inside a stage or select span
    selection: Selection | None = None  # inside a select span
    pair: tuple[int, int] | None = None  # inside a verdict span: [a, b] as judged (first, second)


class ItemStart(_Event):
    """The item's root span opens: the first event of its trace."""

    event: Literal["item.start"]
    parent_id: None
    attempt: int = Field(ge=1)  # 1, or 1 + this item's error rows that reruns have retried


class ItemEnd(_Event):
    """The item's row was written: its root span closes (same span_id as item.start)."""

    event: Literal["item.end"]
    parent_id: None
    status: Literal["ok", "error"]
    error: str | None
    error_cause: str | None
    latency_s: float
    start_ts: float
    usage_calls: int
    usage_cache_hits: int
    usage_prompt_tokens: int
    usage_completion_tokens: int
    usage_cost_usd: float
    usage_cost_uncached_usd: float
    usage_attempts: int
    usage_failed_attempts: int


class SpanEnd(_Event):
    """A stage, select, verdict or check span closes."""

    event: Literal["span.end"]
    parent_id: SpanId
    kind: Literal["stage", "select", "verdict", "check"]
    name: str  # stage: the step; select, verdict, check: the judge's kind
    start_ts: float
    end_ts: float
    status: Literal["ok", "error", "cancelled"]
    error: str | None
    n: int | None = None  # stage: candidates asked for; select: candidates judged
    prefix_len: int | None = None  # stage: length of the chosen text it continues
    winner: int | None = None  # select, verdict: the winning candidate's index
    rounds: int | None = None  # select: rounds played
    mode: Selection | None = None  # select: how it selected
    parse: Parse | None = None  # verdict: how the verdict was reached
    candidate: int | None = None  # check: the candidate whose reasoning was checked


class Candidate(_Event):
    """One generated candidate, under the stage span that made it (winners and losers alike)."""

    event: Literal["candidate"]
    index: int = Field(ge=0)  # its index in the step: what verdicts' pair and winner refer to
    text: str  # the new part only; the whole text is the chosen prefix (prefix_len chars) + this
    prefix_len: int = Field(ge=0)
    repairs: list[str]  # what parsing repaired in this step's reply (e.g. a missing closing tag)


class LlmCall(_Event):
    """One model call attempt (failed ones), or one returned sample (successful ones and cache hits)."""

    event: Literal["llm.call"]
    parent_id: SpanId
    role: Literal["generate", "judge", "check"]
    candidate: int
    model: str
    n: int
    sample: int
    temperature: float | None = None  # the request's sampling temperature (judges may run their own)
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    cache: Literal["hit", "miss"]
    attempt: int = Field(ge=0)
    status: Literal["ok", "retry", "error"]
    error: str | None
    finish_reason: str | None = None  # ok events
    text: str | None = None  # ok events: the completion's text
    messages: list[dict[str, Any]] | None = None  # --trace-prompts only: the request, images as placeholders
    prompt: str | None = None  # staged generate calls: the prompt file's fingerprint
    continued: bool | None = None  # continuation requests: prefix continued (true) or restated (false)
    judge_attempt: int | None = None  # judge calls: 1, or 2 when an unreadable verdict was asked again
    judge_order: Literal[1, 2] | None = None  # --judge-order both: 1 the pair as given, 2 swapped
    checked: int | None = None  # check calls: which response of the pair (0, 1)


class LlmFallback(_Event):
    """A call handed to the next model of --fallback-model; belongs to the span the call was made in."""

    event: Literal["llm.fallback"]
    role: Literal["generate", "judge", "check"]
    model: str
    fallback: str
    error: str
    prompt: str | None = None
    continued: bool | None = None
    judge_attempt: int | None = None
    judge_order: Literal[1, 2] | None = None
    checked: int | None = None


class VerdictOrder(BaseModel):
    """One order a pair was asked in: what the judge said and what was read from it."""

    model_config = ConfigDict(extra="forbid")

    pair: tuple[int, int]  # as shown: [first, second]
    outputs: list[str]  # the judge's raw replies in this order (2 after a re-ask)
    by: Literal["logprob", "text", "none"]  # what the winner was read from; none: unreadable
    p_first: float | None  # P(the first shown wins) from logprobs, None without them
    winner: int | None  # the candidate this order names, None when unreadable


class JudgeVerdict(_Event):
    """One pairwise decision; belongs to its verdict span (a forfeit, decided without a judge, to the
    select span). Written when the selection ends, in verdict order."""

    event: Literal["judge.verdict"]
    stage: Stage
    pair: tuple[int, int]
    round: int | None = Field(ge=1)  # null when the selection ended in an error
    winner: int
    parse: Parse
    reason: str | None
    outputs: list[str]  # the judge's raw replies read for this verdict (1, or 2 after a re-ask)
    selection: Selection
    orders: list[VerdictOrder] = []  # each order asked (two with --judge-order both); [] for a forfeit,
    # a pre-check's decision, identical candidates ("same") or --faithful
    agreed: bool | None = None  # both orders asked and read: did they name the same winner?


class JudgeCheck(_Event):
    """One reasoning pre-check; belongs to its check span (under the verdict span)."""

    event: Literal["judge.check"]
    stage: Stage
    candidate: int  # the checked candidate's index in the step
    position: Literal[0, 1]  # its place in the pair
    passed: bool | None  # None: the output was unreadable (the robust rule then lets it pass)
    output: str
    rule: Literal["robust", "faithful", "logprob"]  # logprob: P("incorrect") vs P("correct") decided
    p_incorrect: float | None = None  # from logprobs at the reply's first word, where the judge gave them


class ItemDuplicate(BaseModel):
    """An id seen again in ITEMS.jsonl during one run: the later line is skipped. No span."""

    model_config = ConfigDict(extra="forbid")

    event: Literal["item.duplicate"]
    ts: float
    item_id: str
    trace_id: None = None
    span_id: None = None
    parent_id: None = None


TraceEvent = Annotated[Union[ItemStart, ItemEnd, SpanEnd, Candidate, LlmCall, LlmFallback, JudgeVerdict,
                             JudgeCheck, ItemDuplicate], Field(discriminator="event")]
SPAN_EVENTS = ("item.start", "span.end", "llm.call")  # the events whose span_id is a span of their own
_adapter: TypeAdapter[Any] = TypeAdapter(TraceEvent)


def parse_event(obj: dict[str, Any] | str | bytes) -> BaseModel:
    """One event (a dict or a JSON line) as its model; pydantic.ValidationError if it breaks the format."""
    if isinstance(obj, (str, bytes)):
        return _adapter.validate_json(obj)
    return _adapter.validate_python(obj)
