"""Prompt files: the only source of prompt text.

Prompt text lives in plain `.txt` files so a researcher can change what the model is asked without
touching code, and so the file's hash (`Prompt.fingerprint`) can go into the cache key: an edited prompt
never replays a stale cached answer.

Lookup order for `load_prompt(name)`: the explicit `directory` argument, then the folder named by the
`STAGEWISE_PROMPTS` environment variable, then the packaged `prompts/` folder. The first folder that
holds the file wins, so an override folder only needs the files it changes. Files are read on every
call (they are small), so an edit takes effect on the next call.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

PROMPTS_ENV = "STAGEWISE_PROMPTS"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "prompts"
FINGERPRINT_CHARS = 16

# A placeholder is `{identifier}`; any other brace (JSON, LaTeX `\boxed{}`) is ordinary text.
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class PromptError(ValueError):
    """A prompt file is missing or was rendered without one of its fields."""


@dataclass(frozen=True)
class Prompt:
    """One prompt file. `text` drops the file's single trailing newline (editors add one; the
    reference strings have none); `fingerprint` hashes the exact file bytes."""

    name: str
    text: str
    fingerprint: str
    path: Path

    @property
    def fields(self) -> frozenset[str]:
        """The `{name}` placeholders this prompt needs."""
        return frozenset(_FIELD.findall(self.text))

    def render(self, **fields: object) -> str:
        """Fill every placeholder in one pass.

        One pass means a value that itself contains `{response2}` is never re-substituted. Extra
        fields are ignored, so callers can pass one uniform set (an override file may drop a
        placeholder on purpose). A missing or None field raises PromptError naming it.
        """
        missing = sorted(n for n in self.fields if fields.get(n) is None)
        if missing:
            given = ", ".join(sorted(k for k, v in fields.items() if v is not None)) or "none"
            raise PromptError(f"prompt {self.name!r} ({self.path}) needs field(s) "
                              f"{', '.join(missing)}; got {given}")

        def fill(m: re.Match[str]) -> str:
            return str(fields[m.group(1)])

        return _FIELD.sub(fill, self.text)


def prompt_dirs(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched, in order. A named override folder that does not exist is an error,
    not a silent fall-back to the defaults."""
    dirs = []
    for folder, origin in ((directory, "prompt directory"), (os.environ.get(PROMPTS_ENV), PROMPTS_ENV)):
        if folder:
            if not Path(folder).is_dir():
                raise PromptError(f"{origin} {str(folder)!r} is not a folder")
            dirs.append(Path(folder))
    dirs.append(DEFAULT_DIR)
    return dirs


_loaded: dict[Path, tuple[tuple[int, int], Prompt]] = {}


def load_prompt(name: str, directory: str | os.PathLike[str] | None = None) -> Prompt:
    """Read prompt `name` ("judge_caption" or "judge_caption.txt")."""
    stem = name[:-4] if name.endswith(".txt") else name
    if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
        raise PromptError(f"bad prompt name {name!r}")
    searched = prompt_dirs(directory)
    for folder in searched:
        path = folder / f"{stem}.txt"
        try:
            st = path.stat()
        except OSError:
            continue
        stamp = (st.st_mtime_ns, st.st_size)
        cached = _loaded.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]  # unchanged since we read it: one stat instead of open + read + hash
        if path.is_file():
            data = path.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PromptError(f"prompt file {path} is not UTF-8: {exc}") from None
            if text.endswith("\r\n"):
                text = text[:-2]
            elif text.endswith("\n"):
                text = text[:-1]
            digest = hashlib.sha256(data).hexdigest()[:FINGERPRINT_CHARS]
            prompt = Prompt(name=stem, text=text, fingerprint=digest, path=path)
            _loaded[path] = (stamp, prompt)
            return prompt
    raise PromptError(f"prompt {stem!r} not found; looked for {stem}.txt in "
                      + ", ".join(str(d) for d in searched))


def check_prompts() -> None:
    """Load every prompt the package ships, as overridden: PromptError now, for a bad override folder
    or file, rather than mid-run."""
    for path in sorted(DEFAULT_DIR.glob("*.txt")):
        load_prompt(path.stem)
