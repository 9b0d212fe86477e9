"""Speech to text: pocketsphinx (CMU's English acoustic and language models, inside its wheel) by default, or a
Whisper model from a local folder (transformers), never downloaded, as align's models are.

Both take mono float32 samples at 16 kHz and give the words heard; pocketsphinx also gives each word's time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .encoders import ModelError, identity, resolve_device

POCKETSPHINX = "pocketsphinx"
RATE = 16_000
WHISPER_WINDOW_S = 30  # what Whisper hears at once: a longer recording is transcribed window by window
NOT_WORDS = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\(.*\))$")  # pocketsphinx's silences and fillers


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[tuple[str, float, float]] = field(default_factory=list)  # (word, start_s, end_s) where known


class PocketSphinx:
    """CMU pocketsphinx with its bundled US English models: fast on a CPU, and rough (tests/test_transcribe.py
    measures its word error rate on real speech)."""

    languages = ("en",)

    def __init__(self):
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=RATE, loglevel="FATAL")
        self.frame_s = 1 / self.decoder.config["frate"]

    def transcribe(self, samples: np.ndarray) -> Transcript:
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        words = [
            (re.sub(r"\(\d+\)$", "", s.word), s.start_frame * self.frame_s, (s.end_frame + 1) * self.frame_s)
            for s in self.decoder.seg()
            if not NOT_WORDS.match(s.word)
        ]  # "word(2)" is the dictionary's second pronunciation of "word"
        return Transcript(" ".join(w for w, _, _ in words), words)

    @staticmethod
    def identity() -> dict:
        from importlib.metadata import version

        return {"name": POCKETSPHINX, "kind": POCKETSPHINX, "version": version("pocketsphinx")}


class Whisper:
    """A transformers Whisper folder (config.json of `model_type: whisper`, weights, the processor's files)."""

    def __init__(self, folder: str, device: str, language: str):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        check_whisper(folder)
        self.device, self.language = resolve_device(device), language
        self.processor = WhisperProcessor.from_pretrained(folder, local_files_only=True)
        model = WhisperForConditionalGeneration.from_pretrained(folder, local_files_only=True)
        self.model = model.eval().to(self.device)
        self.no_grad = torch.no_grad

    def transcribe(self, samples: np.ndarray) -> Transcript:
        texts = []
        step = WHISPER_WINDOW_S * RATE
        for start in range(0, max(len(samples), 1), step):
            features = self.processor(samples[start : start + step], sampling_rate=RATE, return_tensors="pt")
            with self.no_grad():
                language = None if self.language == "auto" else self.language  # None: Whisper detects it
                ids = self.model.generate(features.input_features.to(self.device), language=language, task="transcribe")
            texts.append(self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip())
        return Transcript(" ".join(t for t in texts if t))

    @staticmethod
    def identity(folder: str) -> dict:
        return identity(folder, kind="whisper")


def check_whisper(folder: str) -> None:
    """A usable Whisper folder, or a ModelError that says what is wrong."""
    import json

    config = Path(folder, "config.json")
    if not config.is_file():
        raise ModelError(f"no Whisper model at {folder} (it has no config.json)")
    kind = json.loads(config.read_text()).get("model_type")
    if kind != "whisper":
        raise ModelError(f"{folder} holds a {kind!r} model; a Whisper model (or `pocketsphinx`) is needed")


def load_transcriber(model: str, device: str, language: str) -> PocketSphinx | Whisper:
    return PocketSphinx() if model == POCKETSPHINX else Whisper(model, device, language)


def transcriber_identity(model: str) -> dict:
    """What a version records of the model that wrote its transcripts."""
    return PocketSphinx.identity() if model == POCKETSPHINX else Whisper.identity(model)
