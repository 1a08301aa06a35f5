"""`stagewise export-otel` sends OTLP/protobuf that OpenTelemetry's own message classes decode into the
run's trees: ids kept, parents kept, GenAI and stagewise attributes set. The receiver is a real HTTP
server on 127.0.0.1 (aiohttp)."""
from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest
from aiohttp import web

from conftest import read_jsonl, stagewise, write_items

trace_pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")


class Receiver:
    """An OTLP/HTTP traces endpoint that keeps every span it is sent, decoded."""

    def __init__(self):
        self.spans: list = []
        self.content_types: set[str] = set()
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), daemon=True).start()
        started.wait(10)

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/traces", self.traces)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1/traces"
        started.set()
        self.loop.run_forever()

    async def traces(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        message = trace_pb.ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for rs in message.resource_spans:
            for ss in rs.scope_spans:
                self.spans.extend(ss.spans)
        return web.Response(body=trace_pb.ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind)


def test_export_keeps_ids_parents_and_attributes(tmp_path, fake_server):
    items = write_items(tmp_path / "items.jsonl", [{"id": f"o{i}", "question": f"Which bar? ({i})"} for i in range(2)])
    out = tmp_path / "run"
    stagewise("generate", items, "--out", out, "--graph", "stage_beam", "--n", "2", "--model", "hosted_vllm/fake",
              "--api-base", fake_server.api_base, "--no-progress", check=True)
    receiver = Receiver()
    stagewise("export-otel", out, "--endpoint", receiver.url, check=True)

    events = read_jsonl(out / "traces.jsonl")
    recorded = {e["span_id"]: e for e in events if e["event"] in ("item.start", "span.end", "llm.call")}
    assert receiver.content_types == {"application/x-protobuf"}
    got = {s.span_id.hex(): s for s in receiver.spans}
    assert set(got) == set(recorded) and len(receiver.spans) == len(recorded)
    assert len({s.trace_id.hex() for s in receiver.spans}) == 2  # one trace per item
    for span_id, span in got.items():
        e = recorded[span_id]
        assert span.trace_id.hex() == e["trace_id"]
        assert (span.parent_span_id.hex() or None) == e["parent_id"]
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
    calls = [s for s in receiver.spans if s.name.startswith("chat ")]
    assert len(calls) == sum(e["event"] == "llm.call" for e in events)
    for s in calls:
        attrs = {a.key: _value(a.value) for a in s.attributes}
        e = recorded[s.span_id.hex()]
        assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "vllm"
        assert attrs["gen_ai.request.model"] == "hosted_vllm/fake"
        assert attrs["gen_ai.usage.input_tokens"] == e["prompt_tokens"]
        assert attrs["gen_ai.usage.output_tokens"] == e["completion_tokens"]
        assert attrs["stagewise.stage"] == e["stage"] and attrs["stagewise.role"] == e["role"]
        assert attrs["stagewise.cache"] == e["cache"] and attrs["stagewise.candidate"] == e["candidate"]
    selects = [s for s in receiver.spans if s.name.startswith("select ")]
    assert len(selects) == 8 and all("stagewise.winner" in {a.key for a in s.attributes} for s in selects)
    notes = Counter(ev.name for s in receiver.spans for ev in s.events)
    assert notes == Counter({"candidate": 16, "judge.verdict": 8, "judge.check": 4})


def test_clear_errors_for_no_traces_and_no_endpoint(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = stagewise("export-otel", empty, "--endpoint", "http://127.0.0.1:9/v1/traces")
    assert proc.returncode == 2 and "no traces.jsonl" in proc.stderr and str(empty) in proc.stderr
    run = tmp_path / "run"
    run.mkdir()
    (run / "traces.jsonl").write_text("")
    proc = stagewise("export-otel", run, "--endpoint", "http://127.0.0.1:9/v1/traces", "--timeout", "2")
    assert proc.returncode == 2 and "cannot reach the OTLP endpoint http://127.0.0.1:9/v1/traces" in proc.stderr


@pytest.mark.parametrize("option, value", [
    ("--endpoint", "http://[::1"), ("--endpoint", "http://127.0.0.1:99999"), ("--endpoint", "http://127.0.0.1:abc"),
    ("--timeout", "-1"), ("--timeout", "0"), ("--timeout", "nan"), ("--timeout", "inf")])
def test_a_bad_endpoint_or_timeout_is_one_usage_line(tmp_path, option, value):
    """Refused up front (they were ValueError/OverflowError tracebacks from urlsplit, the socket or the
    exporter), naming the option."""
    (tmp_path / "traces.jsonl").write_text("")
    proc = stagewise("export-otel", tmp_path, f"{option}={value}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("stagewise: error: "), proc.stderr
    assert option in lines[0]
