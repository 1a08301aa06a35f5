"""Training examples from stagewise results or LLaVA-CoT-100k files, with a count of every row dropped.

Two formats come in, one comes out (`Example`):
- ``DIR/results.jsonl`` (what ``stagewise generate`` writes): a row is kept when its status is "ok", its
  response has the four stages complete and in order, and, where a reference answer exists, it was
  scored correct. The response is trimmed to ``<SUMMARY>…</CONCLUSION>``.
- LLaVA-CoT-100k (``{id, image, conversations: [{from: human|gpt, value}]}``, .jsonl or a .json array):
  turns are paired (human, gpt), ``<image>`` placeholders are removed (the collator places the image).
  A row without an ``image`` (absent or null) is a text-only dialog, as in LLaVA's instruction mixes.

A row whose image is missing, remote or unreadable is skipped and counted, never a crash: one bad file
in 100k must not cost a training run. Only stdlib + Pillow here, so the light test suite covers it.
"""
from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

STAGES = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")
# Four tags, in order, each closed and non-empty; only whitespace between them.
COT_RE = re.compile(r"<SUMMARY>(.*?)</SUMMARY>\s*<CAPTION>(.*?)</CAPTION>\s*"
                    r"<REASONING>(.*?)</REASONING>\s*<CONCLUSION>(.*?)</CONCLUSION>", re.DOTALL)


@dataclass
class Example:
    """One training dialog: the image goes with the first user turn; loss on the assistant turns."""
    id: str
    image: str | None  # an existing file path, or a data: URL; None for a text-only dialog
    turns: list[tuple[str, str]]  # (user, assistant) pairs


@dataclass
class Counts:
    """What was read and why rows were dropped; goes into run.json and the CLI summary."""
    rows: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def as_dict(self) -> dict:
        return {"rows": self.rows, "kept": self.kept, "dropped": dict(sorted(self.dropped.items()))}


# --- images -------------------------------------------------------------------------------------

def resolve_image(ref, roots: list[Path]) -> tuple[str | None, str | None]:
    """(path or data URL, None) when usable, else (None, reason). Relative paths try each root."""
    if not isinstance(ref, str) or not ref.strip():
        return None, "no_image"
    if ref.startswith("data:"):
        return ref, None
    if re.match(r"^[a-z]+://", ref):
        return None, "remote_image"  # the trainer reads files only; download first
    p = Path(ref).expanduser()
    candidates = [p] if p.is_absolute() else [r / p for r in roots]
    for c in candidates:
        if c.is_file():
            return str(c.resolve()), None
    return None, "missing_image"


def _image_bytes(ref: str):
    if ref.startswith("data:"):
        return io.BytesIO(base64.b64decode(ref.split(",", 1)[1]))
    return ref


def check_image(ref: str) -> bool:
    """Cheap check (header + Pillow's verify, no full decode): catches non-images and broken PNGs."""
    from PIL import Image

    try:
        with Image.open(_image_bytes(ref)) as im:
            im.verify()
        return True
    except Exception:  # noqa: BLE001 - any unreadable file is a skip, whatever Pillow raises
        return False


def open_image(ref: str):
    """Decode fully to RGB; raises on a truncated file (the dataset counts and skips those)."""
    from PIL import Image

    with Image.open(_image_bytes(ref)) as im:
        return im.convert("RGB")


class Dialogs:
    """Map-style dataset over Examples: (RGB image, turns), or None when the image fails to decode
    (a truncated file passes `check_image`); the collator drops and counts those."""

    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        ex = self.examples[i]
        if ex.image is None:
            return None, ex.turns  # a text-only dialog (a bare None is a decode failure)
        try:
            return open_image(ex.image), ex.turns
        except Exception:  # noqa: BLE001 - same policy as check_image
            return None


# --- stagewise results ----------------------------------------------------------------------------

def cot_text(row: dict) -> str | None:
    """The four-stage answer: the response trimmed to <SUMMARY>…</CONCLUSION>, or built from
    ``stages`` when the response is absent; None when any stage is missing or empty."""
    resp = row.get("response")
    if isinstance(resp, str):
        m = COT_RE.search(resp)
        if m and all(g.strip() for g in m.groups()):
            return resp[m.start():m.end()]
    stages = row.get("stages") or {}
    if isinstance(stages, dict) and not isinstance(resp, str):
        # A stage text may carry its own tags (the closing tag is the stop string): strip, re-wrap.
        parts = [re.sub(rf"</?{s}>", "", t).strip() if isinstance(t := stages.get(s.lower()), str) else ""
                 for s in STAGES]
        if all(parts):
            return "\n\n".join(f"<{s}> {p} </{s}>" for s, p in zip(STAGES, parts))
    return None


def user_text(row: dict) -> str:
    """The question exactly as the model saw it (stages.agent.question_text, repeated here because the
    trainer reads files only): the question as given, then any choices under "Options:", lettered."""
    q = row.get("question")
    q = q if isinstance(q, str) else str(q or "")
    choices = row.get("choices")
    if isinstance(choices, list) and choices:
        q += "\nOptions:\n" + "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices))
    return q


def _keep_result(row: dict) -> str | None:
    """None to keep, else the reason to drop (checked in this order)."""
    if row.get("status") != "ok":
        return "status_not_ok"
    if not str(row.get("question") or "").strip():
        return "no_question"
    if cot_text(row) is None:
        return "incomplete_tags"
    if row.get("reference") not in (None, ""):
        if row.get("correct") is False:
            return "incorrect"
        if row.get("correct") is not True:
            return "unscored"
    return None


def _json_rows(path: Path):
    """Rows of a .jsonl (one object a line; bad lines counted) or a .json array."""
    data = path.read_bytes()
    if path.suffix == ".json" and data.lstrip().startswith(b"["):
        rows = json.loads(data)
        yield from (r if isinstance(r, dict) else None for r in rows)
        return
    for line in data.split(b"\n"):  # bytes: a U+2028 inside a JSON string is no line end, as it is to str
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            row = None
        yield row if isinstance(row, dict) else None


def read_results(path, image_root=None, check_images: bool = True) -> tuple[list[Example], Counts]:
    """Examples from a stagewise results.jsonl. Relative images are looked up under image_root,
    the file's folder, then the working directory (results keep the ITEMS file's paths)."""
    path = Path(path)
    roots = [Path(image_root)] if image_root else []
    roots += [path.parent, Path.cwd()]
    counts, out, seen = Counts(), [], set()
    for row in _json_rows(path):
        counts.rows += 1
        if row is None:
            counts.drop("bad_json")
            continue
        rid = str(row.get("id", ""))
        if rid in seen:
            counts.drop("duplicate_id")
            continue
        seen.add(rid)
        reason = _keep_result(row)
        img = None
        if reason is None:
            img, reason = _usable_image(row.get("image"), roots, check_images)
        if reason:
            counts.drop(reason)
            continue
        out.append(Example(rid, img, [(user_text(row), cot_text(row))]))
    counts.kept = len(out)
    return out, counts


def _usable_image(ref, roots, check_images: bool):
    """(path, None) for an image we can train on, else (None-or-path, reason to drop the row)."""
    img, reason = resolve_image(ref, roots)
    if reason is None and check_images and not check_image(img):
        reason = "unreadable_image"
    return img, reason


# --- LLaVA-CoT-100k -------------------------------------------------------------------------------

_ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def _turns(convs) -> list[tuple[str, str]] | None:
    """(user, assistant) pairs; None when the dialog does not alternate human/gpt from the start."""
    if not isinstance(convs, list):
        return None
    turns, pending = [], None
    for c in convs:
        if not isinstance(c, dict):
            return None
        speaker, value = c.get("from", c.get("role")), c.get("value", c.get("content"))
        role = _ROLE.get(speaker) if isinstance(speaker, str) else None  # a list or object: a bad row, not a crash
        if role is None or not isinstance(value, str):
            return None
        if role == "user" and pending is None:
            pending = value.replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "").strip()
        elif role == "assistant" and pending is not None:
            turns.append((pending, value.strip()))
            pending = None
        else:
            return None
    return turns or None


def read_llava_cot(path, image_root=None, check_images: bool = True) -> tuple[list[Example], Counts]:
    """Examples from LLaVA-CoT-100k's format. Relative images are looked up under image_root, the
    file's folder (the released train.jsonl beside its unzipped images; our exports), then the
    working directory, as for results."""
    path = Path(path)
    roots = [Path(image_root)] if image_root else []
    roots += [path.parent, Path.cwd()]
    counts, out = Counts(), []
    for i, row in enumerate(_json_rows(path)):
        counts.rows += 1
        if row is None:
            counts.drop("bad_json")
            continue
        turns = _turns(row.get("conversations"))
        if turns is None:
            counts.drop("bad_conversations")
            continue
        img, reason = None, None
        if row.get("image") is not None:  # no image: a text-only dialog
            img, reason = _usable_image(row.get("image"), roots, check_images)
        if reason:
            counts.drop(reason)
            continue
        out.append(Example(str(row.get("id", i)), img, turns))
    counts.kept = len(out)
    return out, counts


# --- either -------------------------------------------------------------------------------------

def detect(path) -> tuple[str, Path]:
    """("results" | "llava-cot", file) for a run DIR, a results.jsonl or a LLaVA-CoT .json/.jsonl.
    Raises FileNotFoundError / ValueError with a one-line message otherwise."""
    p = Path(path)
    if p.is_dir():
        if (p / "results.jsonl").is_file():
            return "results", p / "results.jsonl"
        raise FileNotFoundError(f"{p} has no results.jsonl")
    if not p.is_file():
        raise FileNotFoundError(f"no such file or directory: {p}")
    for row in _json_rows(p):
        if row is None:
            continue
        if "conversations" in row:
            return "llava-cot", p
        if "status" in row or "response" in row or "stages" in row:
            return "results", p
        break
    raise ValueError(f"{p}: neither stagewise results (status/response) nor LLaVA-CoT (conversations) rows")


def load(path, image_root=None, check_images: bool = True) -> tuple[list[Example], Counts, str]:
    """(examples, counts, format) for any supported input; see `detect`."""
    fmt, f = detect(path)
    reader = read_results if fmt == "results" else read_llava_cot
    examples, counts = reader(f, image_root=image_root, check_images=check_images)
    return examples, counts, fmt
