"""The recipe's `generate:`: texts the build writes itself, each by its stage (transcribe, caption), and what a
version records of them."""

from __future__ import annotations

from ..core.settings import Strict
from ..models.captioner import prompt_hash
from ..models.encoders import identity
from ..models.speech import transcriber_identity
from .caption import CaptionConfig
from .transcribe import TranscriptConfig


class GenerateConfig(Strict):
    """`generate:` transcripts of speech (kind `asr`) and captions of pictures and videos (kind `synthetic`)."""

    transcript: TranscriptConfig | None = None
    caption: CaptionConfig | None = None


def generate_report(config: GenerateConfig) -> dict | None:
    """What a version records of the texts it wrote: each model's identity, and its language or prompt."""
    found = {}
    if t := config.transcript:
        found["transcript"] = {"model": transcriber_identity(t.model), "language": t.language}
    if c := config.caption:
        found["caption"] = {
            "model": identity(c.model, kind="image-text-to-text"),
            "prompt": c.prompt,
            "prompt_sha256": prompt_hash(c.prompt) if c.prompt else None,
            "mode": c.mode,
            "max_new_tokens": c.max_new_tokens,
            "num_beams": c.num_beams,
        }
    return found or None
