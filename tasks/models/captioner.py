"""Captions written by a vision-language model from a local transformers folder (BLIP, Florence-2, Qwen2-VL,
LLaVA, ...: any model `AutoModelForImageTextToText` loads), never downloaded, as align's models are.

Greedy decoding by default, so the same picture and prompt give the same caption on every run. A chat model
(its processor has a chat template) is asked the prompt about the picture in its own template; a captioning
model (BLIP) continues the prompt, which is then cut from the caption. transformers' batched `generate` is the
only backend: a vLLM one is not built (vLLM is not a dependency, and nothing here could test it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .encoders import ModelError, identity, resolve_device


def check_captioner(folder: str) -> str:
    """The folder's model type, when `AutoModelForImageTextToText` can load it; a ModelError otherwise."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as TYPES

    config = Path(folder, "config.json")
    if not config.is_file():
        raise ModelError(f"no vision-language model at {folder} (it has no config.json)")
    kind = json.loads(config.read_text()).get("model_type")
    if kind not in TYPES:
        raise ModelError(f"{folder} holds a {kind!r} model; an image-text-to-text model (BLIP, LLaVA, ...) is needed")
    return kind


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:12]


def generated_by(folder: str, prompt: str | None = None, kind: str | None = None) -> str:
    """What a generated text records of what wrote it: `<folder name>@<weights sha256, 12>[+prompt:<sha256, 12>]`."""
    found = identity(folder, kind=kind or "generator")
    return f"{found['name']}@{found['weights_sha256'][:12]}" + (f"+prompt:{prompt_hash(prompt)}" if prompt else "")


class Captioner:
    """`inputs(pictures)` prepares a batch (the processor), `generate(inputs)` runs the model (the bare call),
    `decode(ids)` gives the captions; `caption(pictures)` is the three."""

    def __init__(self, folder: str, device: str, prompt: str, max_new_tokens: int, num_beams: int = 1):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.kind = check_captioner(folder)
        self.device = resolve_device(device)
        self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
        self.model = model.eval().to(self.device)
        self.settings = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": False}
        self.prompt, self.chat = prompt, bool(getattr(self.processor, "chat_template", None))
        self.text = self._asked(prompt)
        self.inference = torch.inference_mode

    def _asked(self, prompt: str) -> str:
        if not self.chat:
            return prompt
        question = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(question, add_generation_prompt=True)

    def inputs(self, pictures: list) -> dict:
        texts = [self.text] * len(pictures) if self.text else None
        found = self.processor(images=[p.convert("RGB") for p in pictures], text=texts, return_tensors="pt")
        return {k: v.to(self.device) for k, v in found.items()}

    def generate(self, inputs: dict):
        with self.inference():
            return self.model.generate(**inputs, **self.settings)

    def decode(self, ids, inputs: dict) -> list[str]:
        prompt = inputs.get("input_ids")
        if prompt is not None and ids.shape[1] >= prompt.shape[1] and bool((ids[:, : prompt.shape[1]] == prompt).all()):
            ids = ids[:, prompt.shape[1] :]  # a decoder-only model repeats its whole input first
        texts = [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        if not self.chat and self.prompt:  # a captioning model continues the prompt: the caption is what follows
            texts = [t[len(self.prompt) :].strip() if t.startswith(self.prompt) else t for t in texts]
        return texts

    def caption(self, pictures: list) -> list[str]:
        inputs = self.inputs(pictures)
        return self.decode(self.generate(inputs), inputs)
