"""trainer/ end to end on CPU with tiny models built offline: masking, training, save/reload, LoRA,
resume, bad images, both architectures. About a minute on 2 cores."""
import argparse
import io
import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from PIL import Image
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor

from trainer import cli, synth, tiny
from trainer.collate import IGNORE, Collator, messages
from trainer.config import TrainConfig
from trainer.train import train

ARCHS = ["mllama", "llava"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {a: str(tiny.build(root / a, a)) for a in ARCHS}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    synth.write_run(d, n=32)
    return d


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="stagewise")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def truncated_jpeg(path):
    """Passes the load-time check (header + verify) but fails to decode: found only in training."""
    im = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: int(len(buf.getvalue()) * 0.9)])


def greedy(model, processor, image, question, n=12):
    prompt = processor.apply_chat_template(messages([(question, "")])[:1], tokenize=False,
                                           add_generation_prompt=True)
    enc = processor(images=[[image]], text=[prompt], add_special_tokens=False, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False)
    return out[0, enc["input_ids"].shape[1]:].tolist()


def logits_of(model, processor, image, question):
    batch = Collator(processor)([(image, [(question, synth.response(["red", "blue", "green"], "red"))])])
    batch.pop("skipped"), batch.pop("labels")
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def cfg(run, base, out, **kw):
    kw = {"lr": 1e-3, "grad_accum": 1, "progress": False, **kw}
    return TrainConfig(data=str(run), base=base, out=str(out), **kw)


@pytest.mark.parametrize("arch", ARCHS)
def test_masking_supervises_exactly_the_assistant_tokens(bases, arch):
    processor = AutoProcessor.from_pretrained(bases[arch])
    im = Image.new("RGB", (70, 50), "red")
    answer = synth.response(["red", "blue", "green"], "blue")
    dialogs = [[("Which colour bar is the tallest?", answer)],
               [("A much longer first question, to make padding", "Short."), ("Next?", answer)]]
    batch = Collator(processor)([(im, t) for t in dialogs])
    ids, labels = batch["input_ids"], batch["labels"]
    eot = processor.tokenizer.eos_token
    for i, turns in enumerate(dialogs):
        n = int(batch["attention_mask"][i].sum())
        # Independent oracle: the processor's own encoding of the prompt up to the last assistant turn.
        prompt = processor.apply_chat_template(messages(turns)[:-1], tokenize=False, add_generation_prompt=True)
        first = processor(images=[[im]], text=[prompt], add_special_tokens=False,
                          return_tensors="pt")["input_ids"].shape[1]
        assert torch.equal(ids[i, :first], processor(images=[[im]], text=[prompt], add_special_tokens=False,
                                                     return_tensors="pt")["input_ids"][0])
        assert torch.equal(labels[i, first:n], ids[i, first:n])            # assistant tokens: supervised
        assert (labels[i, n:] == IGNORE).all()                              # padding: not
        text = processor.tokenizer.decode(labels[i, first:n])
        assert text.startswith("<SUMMARY>") and eot in text[-len(eot) - 2:]
        if len(turns) == 1:
            assert (labels[i, :first] == IGNORE).all()                     # everything before it: not
        else:  # the earlier assistant turn is supervised too, its user turns are not
            sup = processor.tokenizer.decode(labels[i, :first][labels[i, :first] != IGNORE])
            assert sup.startswith("Short.") and "question" not in sup and "Next" not in sup
    if arch == "mllama":
        assert batch["cross_attention_mask"].shape[:2] == ids.shape


@pytest.mark.parametrize("arch", ARCHS)
def test_train_lowers_loss_then_reload_gives_identical_greedy_output(bases, run_dir, tmp_path, arch):
    out = tmp_path / "out"
    result = train(cfg(run_dir, bases[arch], out, max_steps=30))
    losses = result.run["losses"]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses

    run = json.loads((out / "run.json").read_text())
    assert run["steps"] == 30 and run["arch"] == arch and run["mode"] == "full"
    assert run["counts"] == {"rows": 32, "kept": 32, "dropped": {}}
    assert run["final_loss"] == losses[-1] and run["wall_s"] > 0 and run["examples_seen"] == 120

    image = synth.bar_chart(["blue", "red", "yellow"], [20, 40, 10])
    before = greedy(result.model, result.processor, image, synth.QUESTION)
    reloaded = AutoModelForImageTextToText.from_pretrained(out)
    assert type(reloaded).__name__ == type(result.model).__name__
    assert greedy(reloaded, AutoProcessor.from_pretrained(out), image, synth.QUESTION) == before
    if arch == "llava":  # vLLM's LLaVA loader wants the legacy CLIP names
        with safe_open(out / "model.safetensors", "pt") as f:
            vision = [k for k in f.keys() if "vision_tower" in k]  # noqa: SIM118 - safe_open is not a dict
        assert vision and all(k.startswith("vision_tower.vision_model.") for k in vision)


def test_lora_adapter_saves_and_merge_equals_base_plus_adapter(bases, run_dir, tmp_path):
    from peft import PeftModel

    base_dir, out = bases["llava"], tmp_path / "lora"
    result = train(cfg(run_dir, base_dir, out, lora=True, merge=True, lr=1e-2, max_steps=6))
    run = result.run
    assert run["mode"] == "lora" and run["merged"] and run["trainable_params"] < run["params"] / 5
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()

    image, q = synth.bar_chart(["green", "red", "blue"], [40, 10, 20]), synth.QUESTION
    base = AutoModelForImageTextToText.from_pretrained(base_dir)
    processor = AutoProcessor.from_pretrained(base_dir)
    base_logits = logits_of(base, processor, image, q)
    with_adapter = PeftModel.from_pretrained(base, out / "adapter")
    merged = AutoModelForImageTextToText.from_pretrained(out)
    assert not any("lora" in k for k in merged.state_dict())
    adapter_logits, merged_logits = logits_of(with_adapter, processor, image, q), logits_of(merged, processor, image, q)
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-3)  # the adapter learned something
    assert torch.allclose(adapter_logits, merged_logits, atol=1e-4)
    assert greedy(with_adapter, processor, image, q) == greedy(merged, processor, image, q)


def test_resume_from_checkpoint_continues_exactly(bases, run_dir, tmp_path):
    base = bases["llava"]  # in the length-grouped order, which a resume must replay as well
    full = train(cfg(run_dir, base, tmp_path / "a", max_steps=4, batch_size=8, save_every=2, group_by_length=True))
    ckpt = tmp_path / "a" / "checkpoints" / "step-2"
    assert (ckpt / "trainer_state.json").is_file() and full.run["group_by_length"]
    with pytest.raises(ValueError, match="saved for"):  # another order cannot resume it
        train(cfg(run_dir, base, tmp_path / "d", max_steps=4, batch_size=8, resume=str(ckpt)))
    resumed = train(cfg(run_dir, base, tmp_path / "b", max_steps=4, batch_size=8, resume=str(ckpt),
                        group_by_length=True))
    assert resumed.run["steps"] == 4 and resumed.run["resumed_from"] == str(ckpt)
    assert resumed.run["losses"] == full.run["losses"]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(ValueError, match="saved for"):  # a different layout cannot resume it
        train(cfg(run_dir, base, tmp_path / "c", max_steps=4, batch_size=4, resume=str(ckpt), group_by_length=True))


def test_resume_needs_the_same_model_setup(bases, run_dir, tmp_path, capsys):
    """Another base, --lora or --freeze-vision cannot load the checkpoint's weights: one usage line; a
    copy of the same base in another folder resumes."""
    import shutil

    train(cfg(run_dir, bases["llava"], tmp_path / "a", max_steps=1, batch_size=8, save_every=1))
    ckpt = tmp_path / "a" / "checkpoints" / "step-1"
    capsys.readouterr()
    common = ["train", str(run_dir), "--out", str(tmp_path / "b"), "--max-steps", "2", "--batch-size", "8",
              "--grad-accum", "1", "--no-progress", "--resume", str(ckpt)]
    for extra in (["--base", bases["mllama"]], ["--base", bases["llava"], "--lora"],
                  ["--base", bases["llava"], "--freeze-vision"]):
        assert run_cli([*common, *extra]) == 2
        err = capsys.readouterr().err
        assert "saved for" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "b").exists()
    moved = shutil.copytree(bases["llava"], tmp_path / "moved-base")
    assert run_cli([*common, "--base", str(moved)]) == 0
    assert json.loads((tmp_path / "b" / "run.json").read_text())["steps"] == 2


def test_length_grouping_pads_less_and_keeps_every_example_once():
    from trainer.train import epoch_order

    n, bs, world = 1000, 4, 2
    lengths = torch.randint(0, 1000, (n,), generator=torch.Generator().manual_seed(0)).tolist()

    def micro_batches(grouped: bool, epoch: int = 0) -> list[list[int]]:
        ranks = [epoch_order(n, epoch, 7, world, r, lengths if grouped else None, bs * world) for r in range(world)]
        assert len({len(m) for m in ranks}) == 1  # every rank does the same number of micro-batches
        return [sum((m[i:i + bs] for m in ranks), []) for i in range(0, len(ranks[0]), bs)]

    def padding(batches):  # what padding each batch to its longest costs, over the real lengths
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    plain, grouped = micro_batches(False), micro_batches(True)
    assert sorted(sum(grouped, [])) == sorted(sum(plain, [])) == list(range(n))  # same examples, once each
    assert padding(grouped) < padding(plain) / 10
    assert grouped == micro_batches(True) and grouped != micro_batches(True, epoch=1)  # seeded per epoch
    firsts = [lengths[b[0]] for b in grouped[:50]]
    assert firsts != sorted(firsts, reverse=True)  # the batches of a run are shuffled, not long to short


def test_bad_images_are_skipped_and_counted_and_vision_can_be_frozen(bases, tmp_path):
    run = tmp_path / "run"
    synth.write_run(run, n=8)
    truncated_jpeg(run / "img" / "late.jpg")  # passes the load-time check, fails to decode
    rows = (run / "results.jsonl").read_text().splitlines()
    extra = []
    for i, img in [(100, "img/late.jpg"), (101, "img/missing.png")]:
        row = json.loads(rows[0])
        row.update(id=f"bad-{i}", image=img)
        extra.append(json.dumps(row))
    (run / "results.jsonl").write_text("\n".join(rows + extra) + "\n")

    base = bases["mllama"]
    result = train(cfg(run, base, tmp_path / "out", epochs=1, grad_accum=None, freeze_vision=True))
    r = result.run
    assert r["counts"] == {"rows": 10, "kept": 9, "dropped": {"missing_image": 1}}
    assert r["skipped_images"] == 1 and r["examples_seen"] == 8
    assert r["grad_accum"] == 8 and r["steps"] == 1  # 9 rows = 3 micro-batches of 4, one step
    before = AutoModelForImageTextToText.from_pretrained(base).state_dict()
    after = result.model.state_dict()
    vision = [k for k in after if "vision_model" in k]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert not all(torch.equal(before[k], after[k]) for k in after if "language_model" in k)


def test_a_step_whose_images_all_fail_records_null_not_nan(bases, tmp_path):
    """One example a step and one image that fails to decode: that step has no loss. run.json says null
    there (NaN is not JSON), and the last loss is the last step that had one."""
    run = tmp_path / "run"
    synth.write_run(run, n=2)
    truncated_jpeg(run / "img" / "late.jpg")
    rows = (run / "results.jsonl").read_text().splitlines()
    bad = json.loads(rows[0]) | {"id": "bad", "image": "img/late.jpg"}
    (run / "results.jsonl").write_text("\n".join([*rows, json.dumps(bad)]) + "\n")

    r = train(cfg(run, bases["llava"], tmp_path / "out", epochs=1, batch_size=1)).run
    assert r["steps"] == 3 and r["skipped_images"] == 1
    strict = json.loads((tmp_path / "out" / "run.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"run.json holds {c}"))
    assert strict["losses"] == r["losses"] and r["losses"].count(None) == 1
    assert r["final_loss"] == [x for x in r["losses"] if x is not None][-1]


def test_cli_tiny_model_export_and_train_on_llava_cot(run_dir, tmp_path, capsys):
    assert run_cli(["tiny-model", str(tmp_path / "m"), "--arch", "llava"]) == 0
    out_file = tmp_path / "cot" / "train.jsonl"
    assert run_cli(["export", str(run_dir), "--format", "llava-cot", "--out", str(out_file)]) == 0
    assert run_cli(["train", str(out_file), "--base", str(tmp_path / "m"), "--out", str(tmp_path / "o"),
                    "--max-steps", "2", "--grad-accum", "1", "--lr", "1e-3", "--no-progress"]) == 0
    assert "trained 2 steps on 32 of 32 rows" in capsys.readouterr().out
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["format"] == "llava-cot" and run["steps"] == 2 and run["global_batch"] == 4


def test_unsupported_architecture_is_a_usage_error(run_dir, tmp_path, capsys):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert run_cli(["train", str(run_dir), "--base", str(tmp_path / "gpt2"), "--out", str(tmp_path / "o")]) == 2
    assert "model_type 'gpt2' is not supported" in capsys.readouterr().err


def test_two_processes_match_one_at_the_same_global_batch(bases, run_dir, tmp_path):
    """torchrun (gloo DDP on CPU) runs the trainer unchanged; 2 x accum 8 equals 1 x accum 16."""
    import subprocess
    import sys

    one = train(cfg(run_dir, bases["llava"], tmp_path / "one", max_steps=2, batch_size=2, grad_accum=None))
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "trainer", "train",
           str(run_dir), "--base", bases["llava"], "--out", str(tmp_path / "two"), "--max-steps", "2",
           "--batch-size", "2", "--lr", "1e-3", "--no-progress"]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "run.json").read_text())
    assert (one.run["world_size"], one.run["grad_accum"]) == (1, 16)
    assert (two["world_size"], two["grad_accum"], two["global_batch"]) == (2, 8, 32)
    assert two["examples_seen"] == one.run["examples_seen"] == 64
    assert two["losses"] == pytest.approx(one.run["losses"], abs=1e-4)


def test_max_minutes_stops_early_and_still_saves_a_servable_model(bases, run_dir, tmp_path):
    """A run given less time than its steps need stops at the limit, says so, and leaves the model."""
    out = tmp_path / "out"
    result = train(cfg(run_dir, bases["llava"], out, max_steps=10_000, max_minutes=1e-6))
    run = json.loads((out / "run.json").read_text())
    assert run["stopped_by"] == "time" and run["steps"] == len(run["losses"]) == 1 < 10_000
    assert run["max_minutes"] == 1e-6
    line = subprocess.run([sys.executable, "-m", "trainer.summary", str(out / "run.json")], capture_output=True,
                          text=True, check=True).stdout  # what the recipes print about it
    assert line.startswith("steps 1 (time), examples ") and f"last {run['losses'][-1]:.4f}" in line
    reloaded = AutoModelForImageTextToText.from_pretrained(out)
    image = synth.bar_chart(["blue", "red", "yellow"], [20, 40, 10])
    assert greedy(reloaded, AutoProcessor.from_pretrained(out), image, synth.QUESTION) == \
        greedy(result.model, result.processor, image, synth.QUESTION)


def test_a_time_stop_with_save_every_leaves_a_checkpoint_to_resume(bases, run_dir, tmp_path):
    """Stopped by --max-minutes between two --save-every checkpoints: the step it stopped on is saved."""
    stopped = train(cfg(run_dir, bases["llava"], tmp_path / "a", max_steps=3, batch_size=8, max_minutes=1e-6,
                        save_every=100)).run
    assert stopped["stopped_by"] == "time" and stopped["steps"] == 1
    ckpt = tmp_path / "a" / "checkpoints" / "step-1"
    assert json.loads((ckpt / "trainer_state.json").read_text())["state"]["step"] == 1
    resumed = train(cfg(run_dir, bases["llava"], tmp_path / "b", max_steps=3, batch_size=8, resume=str(ckpt))).run
    assert resumed["stopped_by"] == "steps" and resumed["steps"] == 3
    assert resumed["losses"][:1] == stopped["losses"]


@pytest.mark.parametrize("argv, option", [
    ("train {run} --base {base} --out {out} --lr nan", "--lr"),
    ("train {run} --base {base} --out {out} --lr inf", "--lr"),
    ("train {run} --base {base} --out {out} --lr -1", "--lr"),
    ("train {run} --base {base} --out {out} --lora --lora-r 0", "--lora-r"),
    ("train {run} --base {base} --out {out} --workers -1", "--workers"),
    ("train {run} --base {base} --out {out} --seed 4294967296", "--seed"),
    ("train {run} --base {base} --out {out} --max-minutes nan", "--max-minutes"),
    ("train {run} --base {base} --out {out} --lr-decay nan", "--lr-decay"),
    ("train {run} --base {base} --out {out} --batch-size 99999999999999999999999", "--batch-size"),
    ("train {run} --base {bad_json} --out {out}", "--base"),
    ("train {run} --base {base} --out {out}", "--base"),  # a llava config alone: no processor files
    ("train {run} --base {base} --out {file}", "--out"),
    ("train {run} --base {base} --out /proc/stagewise-test", "--out"),
    ("train {run} --base {base} --out {base}", "--out"),
    ("tiny-model {file} --arch llava", "DIR"),
    ("tiny-model /proc/stagewise-test --arch llava", "DIR"),
    ("tiny-model {out} --arch llava --seed 99999999999999999999999", "--seed"),
])
def test_bad_train_and_tiny_model_usage_is_one_line_and_writes_nothing(run_dir, tmp_path, argv, option):
    """Found by fuzzing: each was a traceback (or a silently accepted value, or a base overwritten)."""
    from conftest import stagewise

    paths = {"run": run_dir, "base": tmp_path / "base", "bad_json": tmp_path / "bad", "file": tmp_path / "file",
             "out": tmp_path / "out"}
    for name, text in (("base", '{"model_type": "llava"}'), ("bad_json", "{not json")):
        paths[name].mkdir()
        (paths[name] / "config.json").write_text(text)
    paths["file"].write_text("")
    r = stagewise(*argv.format(**paths).split(), env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and option in r.stderr and "Traceback" not in r.stderr
    assert not paths["out"].exists() and sorted(os.listdir(paths["base"])) == ["config.json"]
    assert sorted(os.listdir(tmp_path)) == ["bad", "base", "file"]  # no probe left behind either
