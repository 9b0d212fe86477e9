"""Transcribe: a text of kind `asr` for each recording and video with speech (`generate.transcript`), and, where
the source gave a transcript (LibriSpeech, VoxCeleb2's metadata, HowTo100M's subtitles), the word error rate
between the two (the `wer` score), which `filter.max_wer` judges: a mislabelled utterance reads far from its
recording.

It runs after dedupe (no copy is transcribed) and before the filter, on the media as clean published it (its
media file). Nothing is rejected here: an item is transcribed, or left as it was with why in its features
(`features.asr.skipped`: no speech, no sound, a language the model does not speak).
"""

from __future__ import annotations

import re

import pyarrow as pa
from pydantic import Field, model_validator

from ..core import storage
from ..core.schema import scores_dict, with_feature, with_scores
from ..core.settings import Strict
from ..core.stored_media import MediaFile
from ..media import MediaError
from ..media.audio import mono_samples
from ..media.text import clean_texts
from ..models.captioner import generated_by
from ..models.speech import POCKETSPHINX, RATE, PocketSphinx, check_whisper, load_transcriber, transcriber_identity
from .stage import Resources, RowStage, StageOutput

MAX_SECONDS = 3600.0  # an hour: a longer recording is transcribed up to there
SURE_LANGUAGE = 0.8  # a text identified as another language this surely says what the speech is in


class TranscriptConfig(Strict):
    """`generate.transcript:` what writes the transcripts."""

    model: str = POCKETSPHINX  # or a local Whisper folder (transformers), as align's models are
    # what the speech is in: items whose texts are surely another language are skipped; `auto` (a Whisper
    # folder only): the model tells each recording's language itself
    language: str = "en"
    # with voice activity measured (clean.audio.voice_activity): recordings with less speech are not transcribed
    min_speech_ratio: float = Field(0.1, ge=0, le=1)
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$")  # a Whisper model's; pocketsphinx runs on a CPU
    gpu_share: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _the_model_speaks_it(self):
        if self.model == POCKETSPHINX:
            if self.language not in PocketSphinx.languages:
                raise ValueError(
                    f"pocketsphinx transcribes English (en) only, not {self.language!r}: name a Whisper folder"
                )
        else:
            check_whisper(self.model)
        return self

    @property
    def detects_language(self) -> bool:
        return self.language == "auto"


class TranscribeSettings(TranscriptConfig):
    media_dir: str  # where clean wrote `<shard>.media.parquet`


class TranscribeStage(RowStage):
    name = "transcribe"
    Config = TranscribeSettings
    reads = frozenset({"texts", "scores", "sha256"})
    writes = frozenset({"texts", "scores", "features"})

    @classmethod
    def resources_for(cls, settings: dict, gpus: int) -> Resources:
        """A GPU (or a share) for a Whisper model where the cluster has them; pocketsphinx needs a CPU."""
        return Resources() if settings.get("model") == POCKETSPHINX else Resources.for_model(settings, gpus)

    def setup(self) -> None:
        c = self.config
        self.model = load_transcriber(c.model, c.device, c.language)
        self.by = _transcribed_by(c.model)

    def start_shard(self, shard: str) -> None:
        self.media = MediaFile(storage.join(self.config.media_dir, f"{shard}.media.parquet"))

    def process(self, batch: pa.Table) -> StageOutput:
        rows = batch.to_pylist()
        wanted = [r["sample_id"] for r in rows if self._skipped(r) is None]
        self.bytes = {k: data for k, (data, _) in self.media.read(wanted).items()} if wanted else {}
        return super().process(batch)

    def _skipped(self, row: dict) -> str | None:
        """Why this item is not transcribed (None: it is)."""
        if row["modality"] not in ("audio", "video") or (row["modality"] == "video" and not row.get("audio_codec")):
            return "no sound"
        speech = scores_dict(row).get("speech_ratio")
        if speech is not None and speech < self.config.min_speech_ratio:
            return f"speech_ratio={speech:.2f}"
        other = [t["lang"] for t in row["texts"] or [] if (t.get("lang_score") or 0) >= SURE_LANGUAGE]
        if not self.config.detects_language and other and all(lang != self.config.language for lang in other):
            return f"language: its texts are {other[0]}, the model transcribes {self.config.language}"
        return None

    def check(self, row: dict) -> dict:
        if (why := self._skipped(row)) is not None:
            return row if why == "no sound" else with_feature(row, "asr", {"skipped": why})
        try:
            samples = mono_samples(self.bytes[row["sample_id"]], RATE, MAX_SECONDS)
        except MediaError as e:
            return with_feature(row, "asr", {"skipped": f"no sound: {e.detail}"})
        heard = self.model.transcribe(samples)
        noted = with_feature(row, "asr", {"words": [[w, round(s, 2), round(e, 2)] for w, s, e in heard.words]})
        if not heard.text:
            return noted
        said = {"start_s": heard.words[0][1], "end_s": heard.words[-1][2]} if heard.words else {}
        heard_text = {"text": heard.text, "kind": "asr", "source": row["source"], "generated_by": self.by, **said}
        asr, _ = clean_texts([heard_text], "mask")
        given = [t["text"] for t in row["texts"] or [] if t["kind"] == "transcript"]
        scored = with_scores(noted, wer=word_error_rate(given[0], heard.text)) if given else noted
        return {**scored, "texts": (row["texts"] or []) + asr}


def _transcribed_by(model: str) -> str:
    """What an asr text records of what wrote it (tasks/models/captioner.generated_by): pocketsphinx by its version."""
    if model == POCKETSPHINX:
        return f"{POCKETSPHINX}@{transcriber_identity(model)['version']}"
    return generated_by(model, kind="whisper")


def words_of(text: str) -> str:
    """A transcript as its words, for comparing: lower case, punctuation gone (apostrophes kept)."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def word_error_rate(reference: str, heard: str) -> float:
    """jiwer's WER of what was heard against the given transcript (1.0 where the transcript has no words)."""
    import jiwer

    reference, heard = words_of(reference), words_of(heard)
    return float(jiwer.wer(reference, heard)) if reference else 1.0
