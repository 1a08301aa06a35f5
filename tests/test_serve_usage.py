"""`stagewise serve` refuses bad usage before it probes or starts vLLM: one `stagewise: error:` line, exit 2,
no traceback (no vLLM needed: every case stops before the server would start)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, stagewise


@pytest.mark.parametrize("args, named", [
    (("--port", "-1"), "--port"), (("--port", "70000"), "--port"), (("--port", "0"), "--port"),
    (("--host", ""), "--host"), (("--vllm-args", '"unbalanced'), "--vllm-args"),
    (("--python", shutil.which("true") or "/bin/true"), "--python"),  # exits 0 and reports no vLLM
    (("--python", shutil.which("echo") or "/bin/echo"), "--python")])  # prints something else
def test_bad_serve_usage_is_one_line(tmp_path, args, named):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    for proc in (stagewise("serve", tmp_path, *args, timeout=60),
                 subprocess.run([sys.executable, "-m", "stagewise.serve", str(tmp_path), *args], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)):
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("stagewise: error: "), proc.stderr
        assert named in lines[0]
