"""The `hf:` model in this process: load it, prepare requests, encode each image once, generate a
batch of rows. Called only from the backend's single worker thread, never from the event loop."""
from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any

from engine import pricing
from engine.backends.chat_images import split_images
from engine.backends.hf_rows import Prompt, Row, RowSampler, RowStop
from engine.backends.token_healing import Healing
from engine.errors import BadRequest, CallError, ServerError
from engine.types import Completion, Request


class Runner:
    """Owns the model; called only from the backend's single worker thread."""

    def __init__(self, path: str, *, dtype: str = "auto", device: str = "", image_cache: int = 64,
                 attn: str | None = None, threads: int | None = None):
        import torch
        import transformers as tf

        self.torch = torch
        device = device or default_device(torch)
        if threads:
            torch.set_num_threads(threads)
        config = tf.AutoConfig.from_pretrained(path)
        self.model_type = config.model_type
        vlm = type(config) in tf.AutoModelForImageTextToText._model_mapping
        torch_dtype = _dtype(torch, dtype, device)
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if attn:
            kwargs["attn_implementation"] = attn
        if device == "auto":
            kwargs["device_map"] = "auto"
        cls = tf.AutoModelForImageTextToText if vlm else tf.AutoModelForCausalLM
        self.model = cls.from_pretrained(path, **kwargs).eval()
        if device != "auto":
            self.model.to(device)
        self.device = self.model.device
        try:
            self.processor = tf.AutoProcessor.from_pretrained(path) if vlm else None
        except (OSError, ValueError):
            self.processor = None
        self.tokenizer = getattr(self.processor, "tokenizer", None) or tf.AutoTokenizer.from_pretrained(path)
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen is not None else None
        self.eos = {e for e in ([eos] if isinstance(eos, int) else list(eos or [])) if e is not None}
        if self.tokenizer.eos_token_id is not None:
            self.eos.add(self.tokenizer.eos_token_id)
        pad = self.tokenizer.pad_token_id
        self.pad = pad if pad is not None else (getattr(gen, "pad_token_id", None) or min(self.eos or {0}))
        self.vision = self._vision_path() if vlm and self.processor is not None else "none"
        self.healing = Healing(self.tokenizer)
        self.features: OrderedDict[str, Any] = OrderedDict()
        self.image_cache = max(0, image_cache)
        if self.vision == "mllama":
            _drop_after_prefill(self.model, "cross_attention_states")

    def _vision_path(self) -> str:
        """How images reach generate: pre-computed once per image, or the processor's pixels per row."""
        if self.model_type == "mllama":  # the hook needs generate's `is_first_iteration` (transformers 5)
            params = inspect.signature(self.model.prepare_inputs_for_generation).parameters
            return "mllama" if "is_first_iteration" in params else "processor"
        supports = getattr(self.model, "_supports_mm_encoder_outputs", lambda: False)()
        if supports and hasattr(self.model.base_model, "get_image_features"):
            return "features"  # confirmed per request: only when the processor gives pixel_values alone
        return "processor"

    # -- one batch --------------------------------------------------------------------------------

    def run(self, requests: list[Request]) -> list[list[Completion] | BaseException]:
        prompts: list[Prompt | BaseException] = []
        for r in requests:
            try:
                prompts.append(self.prepare(r))
            except CallError as exc:
                prompts.append(exc)
            except Exception as exc:  # noqa: BLE001 — a request we cannot render fails alone
                prompts.append(BadRequest(f"cannot prepare the request: {type(exc).__name__}: {exc}"))
        rows = [Row(p, r, s) for p, r in zip(prompts, requests) if isinstance(p, Prompt) for s in range(r.n)]
        groups = [rows]
        if self.vision in ("mllama", "processor"):  # these cannot mix rows with and without images
            groups = [[r for r in rows if r.prompt.images], [r for r in rows if not r.prompt.images]]
        done: dict[tuple[int, int], Completion] = {}
        failed: dict[int, BaseException] = {}
        for group in groups:
            if not group:
                continue
            try:
                for row, completion in zip(group, self.generate(group)):
                    done[(id(row.request), row.sample)] = completion
            except Exception as exc:  # noqa: BLE001
                err = ServerError(f"generate failed: {type(exc).__name__}: {exc}")
                for row in group:
                    failed[id(row.request)] = err
        out: list[list[Completion] | BaseException] = []
        for p, r in zip(prompts, requests):
            if not isinstance(p, Prompt):
                out.append(p)
            elif id(r) in failed:
                out.append(failed[id(r)])
            else:
                completions = [done[(id(r), s)] for s in range(r.n)]
                for c in completions[1:]:
                    c.prompt_tokens = 0  # charged once, on the first choice
                for c in completions:
                    c.cost_usd = pricing.cost(f"hf:{self.model_type}", c.prompt_tokens, c.completion_tokens)
                out.append(completions)
        return out

    def prepare(self, request: Request) -> Prompt:
        if self.vision == "none" and any(isinstance(m.get("content"), list) and any(
                p.get("type") == "image_url" for p in m["content"]) for m in request.messages):
            raise BadRequest("this model takes no images")
        messages, images, keys = split_images(request.messages)
        if self.vision == "mllama" and len(images) > 1:
            raise BadRequest("hf: Mllama takes one image per request here")
        source = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        cont = request.continue_final and messages and messages[-1].get("role") == "assistant"
        text = source.apply_chat_template(messages, tokenize=False, add_generation_prompt=not cont,
                                          continue_final_message=bool(cont))
        healed = ""
        if cont:
            text, healed = self.healing.split(text)
        if self.processor is not None:
            enc = self.processor(text=[text], images=[images] if images else None, return_tensors="pt",
                                 add_special_tokens=False)
        else:
            enc = self.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        extra = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        return Prompt(text, enc["input_ids"][0], images, keys, extra, healed)

    def generate(self, rows: list[Row]) -> list[Completion]:
        torch = self.torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        kwargs = self._inputs(rows)
        start = kwargs["input_ids"].shape[1]
        stop = RowStop(rows, start, self.tokenizer, self.eos)
        sampler = RowSampler(torch, rows, self.healing)
        config = GenerationConfig(max_new_tokens=max(r.request.max_tokens for r in rows), do_sample=False,
                                  eos_token_id=sorted(self.eos) or None, pad_token_id=self.pad)
        with torch.inference_mode():
            out = self.model.generate(**kwargs, generation_config=config,
                                      logits_processor=LogitsProcessorList([sampler]),
                                      stopping_criteria=StoppingCriteriaList([stop]))
        return [stop.completion(i, out[i, start:].tolist(), len(row.prompt.ids), sampler.top[i])
                for i, row in enumerate(rows)]

    def _inputs(self, rows: list[Row]) -> dict[str, Any]:
        torch = self.torch
        with_images = [r for r in rows if r.prompt.images]
        if with_images and self.vision == "processor":
            return self._processor_inputs(rows)
        width = max(len(r.prompt.ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every row's next token is at the same column
            n = len(r.prompt.ids)
            ids[i, width - n:] = r.prompt.ids
            mask[i, width - n:] = 1
        kwargs: dict[str, Any] = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if not with_images:
            return kwargs
        if self.vision == "features":
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            feats = [f for r in rows for f in self._image_states(r.prompt)]
            kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=feats)}
        elif self.vision == "mllama":
            kwargs["cross_attention_states"] = torch.cat([s for r in rows for s in self._image_states(r.prompt)])
            masks = [r.prompt.extra["cross_attention_mask"][0] for r in rows]
            tiles = max(m.shape[-1] for m in masks)
            cross = torch.zeros((len(rows), width, 1, tiles), dtype=masks[0].dtype)
            for i, m in enumerate(masks):
                cross[i, width - m.shape[0]:, :, :m.shape[-1]] = m
            kwargs["cross_attention_mask"] = cross.to(self.device)
        return kwargs

    def _processor_inputs(self, rows: list[Row]) -> dict[str, Any]:
        tok = self.processor.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = self.processor(text=[r.prompt.text for r in rows], images=[r.prompt.images for r in rows],
                                 return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tok.padding_side = side
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in enc.items()}

    def _image_states(self, prompt: Prompt) -> list[Any]:
        """Per image of this prompt, what the language model consumes; computed once per image
        while it stays among the `image_cache` most recently used."""
        if not all(k in self.features for k in prompt.keys):
            states = self._encode(prompt)
            if self.image_cache == 0:
                return states
            self.features.update(zip(prompt.keys, states))
        out = []
        for key in prompt.keys:
            self.features.move_to_end(key)
            out.append(self.features[key])
        while len(self.features) > max(self.image_cache, len(prompt.keys)):
            self.features.popitem(last=False)
        return out

    def _encode(self, prompt: Prompt) -> list[Any]:
        torch = self.torch
        pixels = {k: v.to(self.device) for k, v in prompt.extra.items() if k != "cross_attention_mask"}
        with torch.inference_mode():
            if self.vision == "mllama":
                base = self.model.base_model
                hidden = base.vision_model(**pixels).last_hidden_state  # (1, images, tiles, patches, dim)
                states = base.multi_modal_projector(hidden).reshape(
                    -1, hidden.shape[-2], self.model.config.text_config.hidden_size)
                per_image = states.shape[0] // max(1, len(prompt.keys))
                return list(states.split(per_image))
            if set(pixels) != {"pixel_values"}:
                raise BadRequest(f"{self.model_type}: pre-encoding needs pixel values only, got {sorted(pixels)}")
            out = self.model.base_model.get_image_features(**pixels, return_dict=True).pooler_output
            return list(out)


def default_device(torch) -> str:
    """A GPU where torch sees one (a Ray actor given one sees just that one), else the CPU: an 11B
    model loaded on the CPU of a GPU machine by default would be the slowest surprise."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(torch, name: str, device: str):
    if name in ("auto", ""):
        return torch.float32 if device == "cpu" else "auto"
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise BadRequest(f"unknown dtype {name!r}")
    return value


def _drop_after_prefill(model, key: str) -> None:
    """Mllama caches the cross-attention keys after prefill; pre-computed states must then stop
    arriving (transformers drops pixel_values itself, but not states we hand it)."""
    original = model.prepare_inputs_for_generation

    def prepare(*args, is_first_iteration=False, **kwargs):
        inputs = original(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            inputs.pop(key, None)
        return inputs

    model.prepare_inputs_for_generation = prepare
