"""Token healing (engine/backends/token_healing.py) on the shipped demo model, whose tokenizer merges
across words: a prefix cut at a sentence end is continued as the model would have written it, through
the `hf:` backend, so sentence_beam works on it."""
from __future__ import annotations

import asyncio
import base64
import io

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from chartbench.bench import make_item  # noqa: E402
from chartbench.charts import render  # noqa: E402
from chartbench.teacher import format_trace, trace  # noqa: E402
from chartbench.trainset import full_prompt  # noqa: E402
from engine.backends import make_backend  # noqa: E402
from engine.backends.token_healing import Healing, strip_healed  # noqa: E402
from engine.types import Request  # noqa: E402
from stagewise.demo import MODEL_DIR  # noqa: E402

SENTENCE = "<SUMMARY> I will count the bars from left to right."


@pytest.fixture(scope="module")
def healing():
    from transformers import AutoTokenizer

    return Healing(AutoTokenizer.from_pretrained(MODEL_DIR))


def test_the_models_own_tokens_across_the_cut_are_a_permitted_spelling(healing):
    tok = healing.tokenizer
    kept, given = healing.split("ASSISTANT: " + SENTENCE)
    assert kept + given == "ASSISTANT: " + SENTENCE and given.endswith("right.")
    # the tokens of the whole text, from the cut on, are allowed one by one while text is left
    whole = tok(given + " </SUMMARY>", add_special_tokens=False)["input_ids"]
    assert any(healing.texts[i].endswith("right. ") for i in whole), "one token spans the cut"
    left = given
    for i in whole:
        if not left:
            break
        assert i in healing.allowed(left), healing.texts[i]
        left = healing.after(left, i)
    assert left == ""
    # so do the prefix's own tokens; a token that is no piece of it is not allowed
    left = given
    for i in tok(given, add_special_tokens=False)["input_ids"]:
        assert i in healing.allowed(left)
        left = healing.after(left, i)
    assert left == "" and tok.convert_tokens_to_ids("</SUMMARY>") not in healing.allowed(given)
    assert strip_healed(given + " </SUMMARY>", given) == " </SUMMARY>"


def test_a_prefix_cut_at_a_sentence_end_is_continued_as_the_model_writes_it():
    """Greedy, from the teacher's answer cut after its first sentence: the shipped model goes on
    with the answer it was trained to write (without healing it wrote judge text: " = 3, I choose ...")."""
    item = make_item(2026, 12, types=("bar_count",))
    answer = format_trace(trace(item.chart, item.question))
    prefix = answer[:answer.index(".") + 1]
    buf = io.BytesIO()
    render(item.chart).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": full_prompt(item)}]},
                {"role": "assistant", "content": prefix}]

    async def go():
        backend = make_backend(f"hf:{MODEL_DIR}")
        try:
            return await backend.complete(Request(messages, max_tokens=40, temperature=0.0, seed=1,
                                                  continue_final=True, stop=("</CAPTION>",)))
        finally:
            await backend.aclose()

    [completion] = asyncio.run(go())
    assert completion.text.startswith(" </SUMMARY>"), completion.text
    assert (prefix + completion.text).startswith(answer[:answer.index("<CAPTION>")])
