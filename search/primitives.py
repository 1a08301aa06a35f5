"""The two operations every graph is made of, bound to one item.

- `generate(prefix, step, n)` → n candidates, each the full text so far (prefix + the new step), the
  way the reference keeps them. `step` is a stage name, "full" (the whole answer) or "sentence".
- `select(candidates, kind)` → the index of the winner, every verdict traced.

Traces (docs/traces.md): a generate step is a `stage` span with one `candidate` event per candidate
(its new text); a select is a `select` span under the stage span its candidates came from, one
`verdict` span per comparison (its calls, `check` spans for pre-checks) and one `judge.verdict` event
per decision, written when the selection ends so each knows its round. Two candidates that show the
judge the same text are decided without a call (parse "same": the first wins), except in --faithful.

A stage continues the exact chosen prefix where the generator can continue an assistant message
(`--mode full` on vLLM and other continuing backends); otherwise the chosen stages are restated in that
stage's own prompt (`--mode staged`, or any backend that cannot continue).
"""
from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from engine.errors import BadOutput
from engine.items import Item
from engine.messages import assistant_message, user_message
from engine.trace import Span
from engine.types import Request
from judges.pairwise import (
    JudgeInputs,
    NotJudgeable,
    check_messages,
    judge_inputs,
    judge_kind,
    judge_messages,
    judgeable,
    precheck_then_judge,
)
from judges.selection import Selection, bracket, knockout
from judges.streams import Streams
from judges.logprobs import check_failure_probability
from judges.verdict import Answer, check_failed, check_failed_faithful, decide, decide_both, decide_first
from search.base import Roles, Settings
from stages.agent import StageAgent, question_text
from stages.prompts import Prompt, load_prompt
from stages.sentences import first_sentence_end
from stages.tags import STAGES, before_other_tags, format_stage, parse_stages

SENTENCE_MAX_TOKENS = 128  # a sentence step samples this much and keeps the first sentence
LOGPROBS_TOP = 5  # alternatives per token asked with judge and check calls for logprob verdicts


def _closing(stage: str) -> str:
    return f"</{stage.upper()}>"


@dataclass(frozen=True)
class PromptSet:
    """The generation prompts, read once per run (each file read per call would cost more than the
    call's own bookkeeping); an edited file takes effect on the next run, with a new cache key."""

    full: Prompt
    continuation: Prompt
    agents: dict[str, StageAgent]

    @classmethod
    def load(cls) -> "PromptSet":
        return cls(load_prompt("full"), load_prompt("continue"), {s: StageAgent.load(s) for s in STAGES})


class Ops:
    """generate and select for one item; graphs are short loops over these two."""

    def __init__(self, item: Item, image_url: str | None, settings: Settings, roles: Roles,
                 prompts: PromptSet | None = None):
        self.prompts = prompts or PromptSet.load()
        self.item = item
        self.image_url = image_url
        self.settings = settings
        self.roles = roles
        self.question = question_text(item.question, item.choices)
        self.streams = Streams(f"{settings.sampling.seed}:{item.id}")
        self.continues = settings.mode == "full" and roles.generator.capabilities.continue_assistant
        self.full_prompt = self.prompts.full.render(question=self.question)
        self.repairs: dict[str, list[str]] = {}  # candidate text → what was repaired along its path
        self.stages_of: dict[str, dict[str, str]] = {"": {}}  # candidate text → its stages, unparsed
        self.made_in: dict[str, Span] = {}  # candidate text → the stage span that made it (for traces)
        self.tracer = roles.generator.tracer

    # --- generate -------------------------------------------------------------------------------

    def _request(self, messages: list[dict[str, Any]], n: int, stop: tuple[str, ...], step: str,
                 continue_final: bool = False, max_tokens: int | None = None, **tags: Any) -> Request:
        s = self.settings.sampling
        return Request(messages=messages, n=n, temperature=s.temperature, top_p=s.top_p,
                       max_tokens=min(max_tokens or s.max_tokens, s.max_tokens), seed=s.seed, stop=stop,
                       continue_final=continue_final, tags={"stage": step, "role": "generate", **tags})

    def _continuation(self, prefix: str, n: int, stop: tuple[str, ...], step: str,
                      max_tokens: int | None = None) -> Request:
        """Ask for what comes after `prefix`: continue it, or restate it in the prompt."""
        if self.continues:
            messages = [user_message(self.full_prompt, self.image_url)]
            if prefix:
                messages.append(assistant_message(prefix))
            return self._request(messages, n, stop, step, continue_final=bool(prefix), max_tokens=max_tokens,
                                 continued=True)
        text = (self.prompts.continuation.render(prompt=self.full_prompt, previous=prefix) if prefix
                else self.full_prompt)
        return self._request([user_message(text, self.image_url)], n, stop, step, max_tokens=max_tokens,
                             continued=False)

    async def generate(self, prefix: str, step: str, n: int) -> list[str]:
        with self.tracer.span("stage", step, labels={"stage": step}, n=n, prefix_len=len(prefix)) as span:
            candidates = await self._generate(prefix, step, n)
            prefix_repairs = len(self.repairs.get(prefix, ()))
            for i, c in enumerate(candidates):
                self.made_in[c] = span
                self.tracer.event("candidate", index=i, text=c[len(prefix):], prefix_len=len(prefix),
                                  repairs=self.repairs.get(c, [])[prefix_repairs:])
            return candidates

    async def _generate(self, prefix: str, step: str, n: int) -> list[str]:
        if step == "full":
            outs = await self.roles.generator.complete(self._request(
                [user_message(self.full_prompt, self.image_url)], n, (), "full"))
            return [o.text for o in outs]
        if step == "sentence":
            return await self._sentences(prefix, n)
        if self.continues:
            outs = await self.roles.generator.complete(self._continuation(prefix, n, (_closing(step),), step))
            # a reply that runs on into another stage's tags is cut there, as StageAgent.parse does
            return [prefix + self._close(before_other_tags(o.text, step), step) for o in outs]
        agent = self.prompts.agents[step]
        previous = self.stages_of.get(prefix)
        if previous is None:
            previous = {k: v for k, v in parse_stages(prefix).stages.items() if v is not None}
        request = agent.request(self.question, self.image_url, previous, n=n, sampling=self.settings.sampling)
        outs = await self.roles.generator.complete(request)
        candidates = []
        for o in outs:
            parsed = agent.parse(o.text)
            candidates.append(prefix + format_stage(step, parsed.body))
            self.repairs[candidates[-1]] = self.repairs.get(prefix, []) + parsed.repairs
            self.stages_of[candidates[-1]] = {**previous, step: parsed.body}
        return candidates

    @staticmethod
    def _close(text: str, stage: str) -> str:
        """Stop strings are not returned by most providers: put the closing tag back."""
        return text if _closing(stage) in text.upper() else text + _closing(stage)

    async def _sentences(self, prefix: str, n: int) -> list[str]:
        """One next sentence per candidate: sample a little, keep up to the first sentence end
        (never inside a decimal); a reply that ends without one closes the CONCLUSION."""
        outs = await self.roles.generator.complete(
            self._continuation(prefix, n, ("</CONCLUSION>",), "sentence", max_tokens=SENTENCE_MAX_TOKENS))
        candidates = []
        for o in outs:
            text = o.text
            end = first_sentence_end(text)
            if end is not None and end < len(text.rstrip()):
                text = text[:end]
            elif o.finish_reason == "stop" and "<CONCLUSION>" in (prefix + text).upper():
                text = self._close(prefix + text, "conclusion")[len(prefix):]
            candidates.append(prefix + text)
        if all(c == prefix for c in candidates):
            raise BadOutput("sentence step made no progress: every candidate was empty")
        return candidates

    # --- select ---------------------------------------------------------------------------------

    async def select(self, candidates: list[str], kind: str, prefix: str | None = None,
                     among: set[int] | None = None) -> int:
        """`prefix`, when given, is what every candidate starts with: the sentence judge then sees just
        each new sentence, with the prefix as its hint (the reference re-splits the whole text on
        "." and can end up judging the shared previous sentence). `among`, when given, are the only
        candidates that may win (the others forfeit without a judge call), so traces keep the
        indices of the step that made them."""
        if len(candidates) == 1:
            return 0
        kind = judge_kind(kind)  # "Reasoning" is the reasoning judge, pre-checks and all; "all" is "answer"
        faithful = self.settings.faithful
        streams = self._streams(candidates, kind)
        tracer = self.roles.judge.tracer
        made_in = {id(s): s for s in (self.made_in.get(c) for c in candidates) if s is not None}
        parent = next(iter(made_in.values())) if len(made_in) == 1 else None  # the stage that made them
        decided: dict[tuple[int, int], dict[str, Any]] = {}  # pair → its judge.verdict, written at the end
        chosen: Selection | None = None
        with tracer.span("select", kind, parent=parent, labels={"stage": kind, "selection": self.settings.selection},
                         n=len(candidates)) as span:
            async def compare(a: int, b: int) -> int:
                return await self._compare(candidates, kind, a, b, prefix, streams, decided)

            valid = None if faithful else (lambda text: judgeable(kind, text))
            if among is not None:
                allowed, judged = {candidates[i] for i in among}, valid
                valid = lambda text: text in allowed and (judged is None or judged(text))  # noqa: E731
            try:
                if self.settings.selection == "knockout":
                    chosen = await knockout(candidates, compare, streams, valid=valid)
                else:
                    chosen = await bracket(candidates, compare, valid=valid, streams=streams)
                span.attrs.update(winner=chosen.winner, rounds=chosen.rounds, mode=chosen.mode)
            finally:
                self._trace_verdicts(tracer, kind, chosen, decided, among is not None)
            return chosen.winner

    def _trace_verdicts(self, tracer: Any, kind: str, chosen: Selection | None,
                        decided: dict[tuple[int, int], dict[str, Any]], restricted: bool = False) -> None:
        """One judge.verdict per decision, in the selection's order, each with its round (a selection
        cut short by an error writes the decisions it made, without rounds)."""
        if chosen is None:
            for pair, verdict in decided.items():
                tracer.event("judge.verdict", stage=kind, pair=list(pair), round=None, **verdict)
            return
        for position, ((a, b), winner) in enumerate(chosen.verdicts):
            if position in chosen.forfeits:
                verdict = {"winner": winner, "parse": "forfeit", "outputs": [],
                           "reason": "the other candidate may not win here (its answer lost the vote) or lacks "
                                     "what this judge needs" if restricted else
                           "the other candidate lacks what this judge needs",
                           "selection": chosen.mode}
            else:
                verdict = decided[(a, b)]
            tracer.event("judge.verdict", stage=kind, pair=[a, b], round=_round_of(chosen, position), **verdict)

    def _logprobs(self) -> bool:
        """Verdicts read from logprobs: asked for (--judge-logprobs), possible (the judge's backend
        returns them) and not --faithful (the reference reads the text)."""
        s = self.settings
        return s.judge_logprobs and not s.faithful and self.roles.judge.capabilities.logprobs

    def _streams(self, candidates: list[str], kind: str) -> Streams:
        """This selection's random streams: keyed by seed, item, judge and the candidates themselves, so
        each sentence step or repeated stage gets its own, with no counter whose order timing could
        change (a user's graph may run selections concurrently)."""
        digest = hashlib.sha256("\0".join(candidates).encode()).hexdigest()[:16]
        return self.streams.child(kind, digest)

    async def _compare(self, candidates: list[str], kind: str, a: int, b: int, prefix: str | None,
                       streams: Streams, decided: dict[tuple[int, int], dict[str, Any]]) -> int:
        faithful = self.settings.faithful
        try:
            if kind == "sentence" and prefix is not None and not faithful:
                inputs = JudgeInputs((candidates[a][len(prefix):].strip(), candidates[b][len(prefix):].strip()),
                                     prefix.strip() or None)
            else:
                inputs = judge_inputs(kind, [candidates[a], candidates[b]], faithful=faithful)
        except NotJudgeable as exc:  # only reachable in --faithful mode, where the reference crashes
            raise BadOutput(f"faithful mode: {exc} (the reference fails here too)") from None
        tracer = self.roles.judge.tracer
        both = self.settings.judge_order == "both" and not faithful
        top_k = LOGPROBS_TOP if self._logprobs() else 0
        with tracer.span("verdict", kind, labels={"pair": [a, b]}) as span:
            decision: dict[str, Any] = {}
            outputs: list[str] = []

            def asker(order: int) -> Callable[[], Awaitable[Answer]]:
                """Ask the judge with the pair shown as given (order 1) or swapped (order 2)."""
                attempt = 0
                responses = inputs.responses if order == 1 else inputs.responses[::-1]

                async def ask() -> Answer:
                    nonlocal attempt
                    attempt += 1
                    messages = judge_messages(kind, self.question, *responses, hint=inputs.hint,
                                              image_url=self.image_url)
                    tags = {"judge_attempt": attempt, **({"judge_order": order} if both else {})}
                    request = self._request(messages, 1, (), kind, **tags)
                    request = _with_role(request, "judge", seed_offset=7919 * (attempt - 1), logprobs=top_k,
                                         temperature=self.settings.judge_temperature)
                    [out] = await self.roles.judge.complete(request)
                    outputs.append(out.text)
                    return out.text, out.logprobs
                return ask

            async def judge() -> int:
                rng = streams.rng("tie", a, b)
                if faithful:
                    async def text_only() -> str:
                        return (await asker(1)())[0]
                    d = await decide(text_only, rng, faithful=True)
                elif both:
                    d = await decide_both(asker(1), asker(2), rng, use_logprobs=bool(top_k))
                else:
                    d = await decide_first(asker(1), rng, use_logprobs=bool(top_k))
                pairs = ((a, b), (b, a))
                decision.update(parse=d.parse, reason=d.reason, agreed=d.agreed, outputs=d.outputs, orders=[
                    {"pair": list(pairs[i]), "outputs": r.outputs, "by": r.by, "p_first": r.p_first,
                     "winner": None if r.winner is None else pairs[i][r.winner]}
                    for i, r in enumerate(d.readings)])
                return d.winner

            async def check(i: int) -> bool:
                with tracer.span("check", kind, candidate=(a, b)[i]):
                    caption = inputs.hint if inputs.hint is not None else ("None" if faithful else "")
                    request = self._request(check_messages(caption, inputs.responses[i]), 1, (), kind, checked=i)
                    request = _with_role(request, "check", seed_offset=0, logprobs=top_k,
                                         temperature=self.settings.judge_temperature)
                    [out] = await self.roles.judge.complete(request)
                    p_fail = check_failure_probability(out.logprobs) if top_k else None
                    if faithful:
                        failed, rule = check_failed_faithful(out.text), "faithful"
                    elif p_fail is not None and p_fail != 0.5:
                        failed, rule = p_fail > 0.5, "logprob"
                    else:
                        failed, rule = check_failed(out.text), "robust"
                    tracer.event("judge.check", stage=kind, candidate=(a, b)[i], position=i,
                                 passed=None if failed is None else not failed, output=out.text,
                                 rule=rule, p_incorrect=p_fail)
                    if failed:
                        decision.update(parse="precheck",
                                        reason=f"the pre-check found candidate {(a, b)[i]}'s reasoning wrong")
                    return bool(failed)

            if not faithful and inputs.responses[0] == inputs.responses[1]:
                # No call: on a well-trained model identical candidates are common, and a verdict
                # between them would only measure the judge's position preference.
                decision.update(parse="same", reason="the two candidates are the same text", outputs=[])
                local = 0
            elif kind == "reasoning":
                local = await precheck_then_judge(check, judge, symmetric=not faithful)
            else:
                local = await judge()
            winner = (a, b)[local]
            span.attrs.update(winner=winner, parse=decision.get("parse"))
            decided[(a, b)] = {"winner": winner, "parse": decision.get("parse", "precheck"),
                               "reason": decision.get("reason"), "outputs": decision.get("outputs", outputs),
                               "orders": decision.get("orders", []), "agreed": decision.get("agreed"),
                               "selection": self.settings.selection, "span_id": span.span_id,
                               "parent_id": span.parent_id}
            return winner


def _round_of(chosen: Selection, position: int) -> int:
    """The round (1, 2, …) of the verdict at `position`: a knockout's verdicts are one a round; a
    bracket of n plays n // 2 pairs in its first round, the rest next (the odd one gets a bye)."""
    if chosen.mode != "bracket":
        return position + 1
    remaining, first, round_no = len(chosen.verdicts) + 1, 0, 1
    while remaining > 1:
        pairs = remaining // 2
        if position < first + pairs:
            return round_no
        first, remaining, round_no = first + pairs, remaining - pairs, round_no + 1
    raise ValueError(f"no verdict at position {position}")


def _with_role(request: Request, role: str, seed_offset: int, logprobs: int = 0,
               temperature: float | None = None) -> Request:
    """A judge or check request: its own role in traces, (for judge retries) a fresh seed, so a
    retried verdict is a new sample rather than the cached unparseable one, the logprobs asked, and
    the judge's own temperature where one is set (a judge often runs greedy while candidates are
    sampled hot)."""
    seed = None if request.seed is None else request.seed + seed_offset
    temperature = request.temperature if temperature is None else temperature
    return replace(request, seed=seed, logprobs=logprobs, temperature=temperature,
                   tags={**request.tags, "role": role})
