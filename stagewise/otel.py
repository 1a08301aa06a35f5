"""`stagewise export-otel DIR --endpoint URL`: replay traces.jsonl into an OpenTelemetry backend.

Phoenix, Langfuse, Jaeger and any OTLP collector then show each item as one trace, with the ids the
run recorded (so a trace found there is found in traces.jsonl too). Sent as OTLP/protobuf over HTTP
(Phoenix takes protobuf, not JSON, on /v1/traces) by OpenTelemetry's own exporter: the spans are
rebuilt as finished `ReadableSpan`s from the recorded ids and times. Calls carry the GenAI semantic
conventions (gen_ai.*), every span the stagewise.* labels; candidates, verdicts and pre-checks become
span events. Needs the `otel` extra: pip install 'stagewise[otel]'.
"""
from __future__ import annotations

import argparse
import math
import socket
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import orjson

from engine.errors import UsageError

DEFAULT_ENDPOINT = "http://127.0.0.1:4318/v1/traces"
_NS = 1_000_000_000
_SPAN_LABELS = ("stage", "role", "candidate", "winner", "cache", "selection", "pair", "attempt", "status",
                "kind", "n", "rounds", "parse", "prefix_len", "sample", "judge_attempt", "checked", "cost_usd",
                "latency_s", "error", "error_cause", "graph", "item_id", "mode")


def trace_files(folder: Path) -> list[Path]:
    """DIR/traces.jsonl of a run, or DIR/<graph>/traces.jsonl of each graph of a compare folder."""
    if (folder / "traces.jsonl").is_file():
        return [folder / "traces.jsonl"]
    found = sorted(folder.glob("*/traces.jsonl"))
    if not found:
        raise UsageError(f"{folder}: no traces.jsonl here or in its graph folders; pass a folder that "
                         "`stagewise generate` or `stagewise compare` wrote")
    return found


def read_traces(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Events grouped by trace id, in file order (lines that are not events are skipped)."""
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with open(path, "rb") as f:
        for line in f:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("trace_id"):
                traces[event["trace_id"]].append(event)
    return traces


def _provider(model: str) -> str:
    """gen_ai.provider.name from a model string: LiteLLM's prefix ("openai/gpt-4o" -> "openai")."""
    prefix = model.split("/", 1)[0] if "/" in model else model.split(":", 1)[0]
    return {"gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai", "hf": "stagewise.hf", "vllm": "stagewise.vllm",
            "hosted_vllm": "vllm", "bedrock": "aws.bedrock"}.get(prefix, prefix)


def _attrs(event: dict[str, Any]) -> dict[str, Any]:
    """stagewise.* attributes: the labels OpenTelemetry can hold (primitives, lists of them)."""
    out = {}
    for key in _SPAN_LABELS:
        value = event.get(key)
        if value is None or key == "kind" and event.get("event") == "llm.call":
            continue
        out[f"stagewise.{key}"] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def _event_attrs(event: dict[str, Any]) -> dict[str, Any]:
    skip = {"event", "ts", "trace_id", "span_id", "parent_id", "graph", "item_id", "selection"}
    out = {}
    for key, value in event.items():
        if key in skip or value is None:
            continue
        if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
            out[f"stagewise.{key}"] = value
        elif isinstance(value, (str, int, float, bool)):
            out[f"stagewise.{key}"] = value
        else:
            out[f"stagewise.{key}"] = orjson.dumps(value).decode()
    return out


def to_spans(events: list[dict[str, Any]], resource: Any) -> list[Any]:
    """One item attempt's events as finished OpenTelemetry spans with the recorded ids and times."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    trace_id = int(events[0]["trace_id"], 16)

    def context(span_id: str) -> SpanContext:
        return SpanContext(trace_id, int(span_id, 16), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))

    last_ts = max(e["ts"] for e in events)
    notes: dict[str, list[Any]] = defaultdict(list)  # span id -> its span events
    for e in events:
        if e["event"] in ("candidate", "judge.verdict", "judge.check", "llm.fallback"):
            notes[e["span_id"]].append(Event(e["event"], _event_attrs(e), int(e["ts"] * _NS)))
    start = next((e for e in events if e["event"] == "item.start"), None)
    end = next((e for e in events if e["event"] == "item.end"), None)
    spans = []

    def span(name: str, e: dict[str, Any], t0: float, t1: float, attrs: dict[str, Any], failed: str | None,
             kind: SpanKind = SpanKind.INTERNAL) -> None:
        status = Status(StatusCode.ERROR, failed) if failed else Status(StatusCode.OK)
        spans.append(ReadableSpan(
            name=name, context=context(e["span_id"]),
            parent=context(e["parent_id"]) if e.get("parent_id") else None, resource=resource,
            attributes=attrs, events=notes.get(e["span_id"], ()), kind=kind, status=status,
            start_time=int(t0 * _NS), end_time=int(t1 * _NS)))

    if start is not None:
        root = {**start, **(end or {})}
        failed = (end or {}).get("error") if end else "cut off: the run stopped before this item ended"
        span(f"item {start['item_id']}", root, start["ts"], (end or {}).get("ts", last_ts), _attrs(root),
             failed if (not end or end.get("status") != "ok") else None)
    for e in events:
        if e["event"] == "span.end":
            failed = e.get("error") or (None if e["status"] == "ok" else e["status"])
            span(f"{e['kind']} {e['name']}", e, e["start_ts"], e["end_ts"], _attrs(e), failed)
        elif e["event"] == "llm.call":
            attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": _provider(e["model"]),
                     "gen_ai.request.model": e["model"], "gen_ai.usage.input_tokens": e["prompt_tokens"],
                     "gen_ai.usage.output_tokens": e["completion_tokens"], **_attrs(e)}
            if e.get("finish_reason"):
                attrs["gen_ai.response.finish_reasons"] = [e["finish_reason"]]
            span(f"chat {e['model']}", e, e["ts"] - e["latency_s"], e["ts"], attrs,
                 e.get("error") if e["status"] != "ok" else None, SpanKind.CLIENT)
    return spans


def _check_options(endpoint: str, timeout_s: float) -> tuple[str, tuple[str, int]]:
    """The endpoint (with /v1/traces where it has no path) and its address; UsageError before anything
    is read or sent (urlsplit raises ValueError for a bad bracket or port, and a timeout of 0, nan or inf
    makes the connection non-blocking or fails deep in the exporter)."""
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise UsageError(f"--timeout must be a finite number of seconds more than 0, not {timeout_s:g}")
    try:
        parts = urlsplit(endpoint)
        port = parts.port if parts.port is not None else 443 if parts.scheme == "https" else 80
    except ValueError as exc:
        raise UsageError(f"--endpoint {endpoint!r} is not a valid URL ({exc}), e.g. {DEFAULT_ENDPOINT}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--endpoint {endpoint!r} is not an http(s) URL, e.g. {DEFAULT_ENDPOINT}")
    return (endpoint if parts.path.strip("/") else endpoint.rstrip("/") + "/v1/traces"), (parts.hostname, port)


def _check_reachable(endpoint: str, address: tuple[str, int], timeout_s: float) -> None:
    try:
        socket.create_connection(address, timeout=timeout_s).close()
    except (OSError, UnicodeError) as exc:  # UnicodeError: a host name IDNA cannot encode (a..b)
        reason = getattr(exc, "strerror", None) or exc
        raise UsageError(f"cannot reach the OTLP endpoint {endpoint}: {reason}") from None


def _batches(spans: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for s in spans:
        batch.append(s)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def export(folder: Path, endpoint: str, *, timeout_s: float = 10.0, service: str = "stagewise") -> dict[str, int]:
    """Send every trace under `folder` to `endpoint`; returns counts of traces and spans sent."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import SpanExportResult
    except ImportError:
        raise UsageError("export-otel needs OpenTelemetry: pip install 'stagewise[otel]'") from None
    endpoint, address = _check_options(endpoint, timeout_s)
    files = trace_files(folder)
    _check_reachable(endpoint, address, timeout_s)
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout_s)
    counts = {"traces": 0, "spans": 0}
    try:
        for path in files:
            resource = Resource.create({"service.name": service, "stagewise.run": str(path.parent)})
            traces = read_traces(path)
            spans = (s for events in traces.values() for s in to_spans(events, resource))
            for batch in _batches(spans, 512):
                if exporter.export(batch) is not SpanExportResult.SUCCESS:
                    raise UsageError(f"the OTLP endpoint {endpoint} refused the spans of {path} (see the log "
                                     "lines above for its reply)")
                counts["spans"] += len(batch)
            counts["traces"] += len(traces)
    finally:
        exporter.shutdown()
    return counts


def handler(args: argparse.Namespace) -> int:
    counts = export(args.dir, args.endpoint, timeout_s=args.timeout, service=args.service_name)
    print(f"sent {counts['traces']} traces ({counts['spans']} spans) to {args.endpoint}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("export-otel", help="send a run's traces to an OpenTelemetry backend (OTLP/HTTP)",
                              description=__doc__.split("\n\n")[0] + " One trace per item attempt, ids kept; "
                              "docs/traces.md.")
    p.add_argument("dir", type=Path, help="a run folder (DIR/traces.jsonl) or a compare folder (DIR/*/traces.jsonl)")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT,
                   help="OTLP/HTTP traces URL (Phoenix: http://HOST:6006/v1/traces; a URL with no path gets "
                        "/v1/traces)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the endpoint per request")
    p.add_argument("--service-name", default="stagewise", help="the service.name resource attribute")
    p.set_defaults(func=handler)
