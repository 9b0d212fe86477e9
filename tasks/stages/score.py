"""Score: how well each text describes its media, by embedding models (tasks/models/encoders.py).

For every text of every item, the cosine of the media's and the text's L2-normalised embeddings goes on
the text (`align_score`); the item's best is its score `align_max`, and its texts are ordered best
first (so a tar's `.txt` member is the best-matching text). Images are scored by CLIP; videos by CLIP
on `frames` frames spread over the clip (clean's keyframes when it kept enough of them), a text's score
being the mean of its per-frame cosines; audio clips by CLAP on the first window of the clip. Scores
are computed on the media as published: clean's bytes, read from its media file (`media_dir`).

With `dedupe.semantic.captions`, a sentence model also embeds each item's first caption (its best, once
scored). With `dedupe.semantic` or `align.keep_embeddings`, what the models made of each item is kept beside
the shard (`<shard>.embeddings.parquet`): what semantic dedupe compares, and what a version publishes.

This stage decides nothing: align's rules drop the texts below the recipe's `min_score`. An item its
model cannot take (an image its preprocessing refuses) is rejected `align:unscorable`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from PIL import Image
from pydantic import Field, field_validator, model_validator

from ..core import storage
from ..core.schema import (
    CAPTION_KINDS,
    DROPPED_TEXT_SCHEMA,
    EMBEDDING_SCHEMA,
    REJECT_SCHEMA,
    SAMPLE_SCHEMA,
    reject_row,
    table_of,
    with_scores,
)
from ..core.settings import Strict
from ..core.stored_media import MediaFile
from ..media import MediaError
from ..media.audio import mono_at
from ..media.kinds import KINDS
from ..media.video import frames_spread
from ..models.encoders import AudioTextEncoder, ImageTextEncoder, TextEncoder, load_head
from .stage import Resources, Stage, StageOutput


def _model_of_kind(path: str, kinds: tuple[str, ...], what: str) -> str:
    """A local model directory of one of `kinds`, checked when the recipe loads (nothing is downloaded)."""
    from ..models.encoders import ModelError, model_kind

    try:
        kind = model_kind(path)
    except ModelError as e:
        raise ValueError(str(e)) from None
    if kind not in kinds:
        raise ValueError(f"{path} is a {kind} model; {what} needs {' or '.join(kinds)}")
    return path


class ImageTextConfig(Strict):
    """CLIP scores of every text against its image: open_clip local-dir or transformers CLIP directory."""

    model: str
    min_score: float | None = Field(None, ge=-1, le=1)  # texts below are dropped (align:low_score); null: keep
    batch_size: int = Field(64, ge=1, le=4096)  # images per forward pass

    @field_validator("model")
    @classmethod
    def _clip(cls, path: str) -> str:
        return _model_of_kind(path, ("open_clip", "clip"), "image_text")


class VideoTextConfig(Strict):
    """CLIP scores of every text against `frames` frames spread over its video (the mean of the frames')."""

    model: str | None = None  # null: image_text's model
    frames: int = Field(8, ge=1, le=64)
    min_score: float | None = Field(None, ge=-1, le=1)
    batch_size: int = Field(64, ge=1, le=4096)  # frames per forward pass

    @field_validator("model")
    @classmethod
    def _clip(cls, path: str | None) -> str | None:
        return None if path is None else _model_of_kind(path, ("open_clip", "clip"), "video_text")


class AudioTextConfig(Strict):
    """CLAP scores of every text against its clip (or a video's sound is not scored: video_text is)."""

    model: str
    min_score: float | None = Field(None, ge=-1, le=1)
    batch_size: int = Field(16, ge=1, le=1024)

    @field_validator("model")
    @classmethod
    def _clap(cls, path: str) -> str:
        return _model_of_kind(path, ("clap",), "audio_text")


class HeadsConfig(Strict):
    """Small heads over each image's CLIP embedding (image_text's model), their outputs stored as scores
    `aesthetic` and `nsfw`: a state dict (safetensors, or torch's .pt/.pth) of linear layers applied in
    order, such as LAION's aesthetic predictor. `filter.min_aesthetic` and `filter.max_nsfw` decide."""

    aesthetic: str | None = None
    nsfw: str | None = None

    @field_validator("aesthetic", "nsfw")
    @classmethod
    def _exists(cls, path: str | None) -> str | None:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"no head file at {path}")
        return path


class ScoringConfig(Strict):
    """The models that score every text against its media (the recipe's `align:` parts), where they run."""

    # alignment scores (texts[i].align_score, scores.align_max), each part optional
    image_text: ImageTextConfig | None = None
    video_text: VideoTextConfig | None = None
    audio_text: AudioTextConfig | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: a GPU where the worker has one
    gpu_share: float = Field(1.0, gt=0, le=1)  # the part of a GPU each scoring worker asks Ray for
    heads: HeadsConfig = HeadsConfig()

    @model_validator(mode="after")
    def _video_model(self):
        if self.video_text and not self.video_text.model and not self.image_text:
            raise ValueError("align.video_text.model is needed when there is no image_text model to share")
        if (self.heads.aesthetic or self.heads.nsfw) and not self.image_text:
            raise ValueError("align.heads score image_text's embeddings: give align.image_text a model")
        return self

    @property
    def scoring(self) -> bool:
        return any((self.image_text, self.video_text, self.audio_text))

    @property
    def video_model(self) -> str | None:
        return self.video_text and (self.video_text.model or self.image_text.model)

    def parts(self) -> dict[str, ImageTextConfig | VideoTextConfig | AudioTextConfig]:
        """Modality -> the part that scores its texts, for the parts the recipe gives (each media kind names
        its part: tasks/media/kinds/)."""
        found = {name: getattr(self, kind.aligned_by) for name, kind in KINDS.items() if kind.aligned_by}
        return {name: part for name, part in found.items() if part is not None}

    def model_of(self, modality: str) -> str:
        """The model that scores this modality's items (a video's: its own, or image_text's)."""
        return self.video_model if modality == "video" else self.parts()[modality].model


class ScoreSettings(ScoringConfig):
    media_dir: str  # where clean wrote `<shard>.media.parquet`: the bytes a trainer will read
    # with keep_embeddings or dedupe.semantic: where `<shard>.embeddings.parquet` goes
    embeddings_dir: str | None = None
    caption_model: str | None = None  # dedupe.semantic.captions' sentence model: each item's first caption


class ScoreStage(Stage):
    name = "score"
    Config = ScoreSettings
    reads = frozenset({"texts", "sha256"})  # sha256: the media clean normalized, in its media file
    writes = frozenset({"texts", "scores"})  # each text's align_score; the heads' scores

    @classmethod
    def resources_for(cls, settings: dict, gpus: int) -> Resources:
        """A GPU (or `gpu_share` of one) per worker where the cluster has GPUs and the recipe allows them."""
        return Resources.for_model(settings, gpus)

    def setup(self) -> None:
        c = self.config
        self.images = ImageTextEncoder(c.image_text.model, c.device) if c.image_text else None
        video = c.video_model
        if video and self.images is not None and video == c.image_text.model:
            self.frames = self.images  # one model in memory for both
        else:
            self.frames = ImageTextEncoder(video, c.device) if video else None
        self.sounds = AudioTextEncoder(c.audio_text.model, c.device) if c.audio_text else None
        self.heads = {name: load_head(path) for name, path in c.heads.model_dump().items() if path}
        self.captions = TextEncoder(c.caption_model, c.device) if c.caption_model else None
        self.media = None

    def start_shard(self, shard: str) -> None:
        self.media = MediaFile(storage.join(self.config.media_dir, f"{shard}.media.parquet"))
        self.vectors: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}  # this batch's embeddings
        self.caption_vectors: dict[str, np.ndarray] = {}  # this batch's first captions, by the sentence model
        self.kept_vectors: list[dict] = []  # the shard's, for keep_embeddings

    def finish_shard(self, shard: str) -> None:
        if self.config.embeddings_dir:
            uri = storage.join(self.config.embeddings_dir, f"{shard}.embeddings.parquet")
            storage.write_parquet(uri, table_of(self.kept_vectors, EMBEDDING_SCHEMA))

    def process(self, batch: pa.Table) -> StageOutput:
        rows = batch.to_pylist()
        todo = [r for r in rows if r["modality"] in self.config.parts() and r["texts"]]
        media = self.media.read([r["sample_id"] for r in todo]) if todo else {}
        failed: dict[str, str] = {}
        for modality, score in (("image", self._images), ("video", self._videos), ("audio", self._sounds)):
            items = [r for r in todo if r["modality"] == modality]
            if items:
                failed.update(score(items, media))
        scored = {r["sample_id"] for r in todo}
        kept = [self._scored(r) if r["sample_id"] in scored else r for r in rows if r["sample_id"] not in failed]
        if self.captions:
            self._embed_captions(kept)
        if self.config.embeddings_dir:
            embedded = self.vectors.keys() | self.caption_vectors.keys()
            self.kept_vectors += [self._vector_row(r) for r in kept if r["sample_id"] in embedded]
        self.vectors, self.caption_vectors = {}, {}
        rejected = [
            reject_row(r, self.name, "align:unscorable", why) for r in rows if (why := failed.get(r["sample_id"]))
        ]
        return StageOutput(
            table_of(kept, SAMPLE_SCHEMA),
            table_of(rejected, REJECT_SCHEMA),
            DROPPED_TEXT_SCHEMA.empty_table(),
        )

    # one method per media kind: each sets texts[i]["align_score"] and returns {sample_id: why} for failures

    def _images(self, items: list[dict], media: dict) -> dict[str, str]:
        def pictures(item):
            return [Image.open(io.BytesIO(media[item["sample_id"]][0]))]

        return self._by_pictures(self.images, self.config.image_text.batch_size, items, pictures)

    def _videos(self, items: list[dict], media: dict) -> dict[str, str]:
        count = self.config.video_text.frames

        def pictures(item):
            data, sidecars = media[item["sample_id"]]
            keyframes = [s["data"] for s in sidecars or [] if s["name"].startswith("keyframe")]
            if len(keyframes) >= count:  # clean's thumbnails, when it kept enough: spread over the clip
                picks = np.unique(np.round(np.linspace(0, len(keyframes) - 1, count)).astype(int))
                return [Image.open(io.BytesIO(keyframes[i])) for i in picks]
            return frames_spread(data, count)

        return self._by_pictures(self.frames, self.config.video_text.batch_size, items, pictures)

    def _by_pictures(self, encoder, batch_size: int, items: list[dict], pictures: Callable) -> dict[str, str]:
        """Items scored by the mean cosine of their pictures (one for an image, `frames` for a video) with
        each of their texts. The next stack of pictures is decoded and preprocessed on a thread while the
        model runs on this one."""
        import torch

        failed: dict[str, str] = {}

        def prepared() -> Iterator[tuple[str, object]]:
            for item in items:
                try:
                    tensors = [encoder.preprocess(p) for p in pictures(item)]
                except (MediaError, OSError, ValueError) as e:  # bytes or pixels the model cannot take
                    failed[item["sample_id"]] = f"{type(e).__name__}: {e}"
                    continue
                yield from ((item["sample_id"], t) for t in tensors)

        by_item: dict[str, list[np.ndarray]] = {}
        for owners, tensors in _overlapped(_chunks(prepared(), batch_size)):
            for owner, embedding in zip(owners, encoder.encode_images(torch.stack(tensors))):
                by_item.setdefault(owner, []).append(embedding)
        scored = [item for item in items if item["sample_id"] not in failed]
        self._score_texts(encoder, scored, {k: np.stack(v) for k, v in by_item.items()})
        return failed

    def _sounds(self, items: list[dict], media: dict) -> dict[str, str]:
        encoder, failed, clips, scored = self.sounds, {}, [], []
        for item in items:
            try:
                clips.append(mono_at(media[item["sample_id"]][0], encoder.sample_rate, encoder.window_s))
                scored.append(item)
            except MediaError as e:
                failed[item["sample_id"]] = f"{e.code}: {e.detail}"
        size = self.config.audio_text.batch_size
        embeddings = np.concatenate([encoder.encode_audio(clips[i : i + size]) for i in range(0, len(clips), size)])
        self._score_texts(encoder, scored, {item["sample_id"]: embeddings[[n]] for n, item in enumerate(scored)})
        return failed

    def _scored(self, item: dict) -> dict:
        texts = sorted(item["texts"], key=lambda t: -t["align_score"])  # best first: the tar's .txt member
        scores = {"align_max": texts[0]["align_score"]}
        if item["modality"] == "image":  # the heads read the image's CLIP embedding
            media = self.vectors[item["sample_id"]][0][None, :]
            scores.update({name: float(head(media)[0]) for name, head in self.heads.items()})
        return {**with_scores(item, **scores), "texts": texts}

    def _embed_captions(self, items: list[dict]) -> None:
        """The sentence model's embedding of each item's first caption (its best, once scored)."""
        firsts = {}
        for item in items:
            caption = next((t["text"] for t in item["texts"] or [] if t["kind"] in CAPTION_KINDS), None)
            if caption:
                firsts[item["sample_id"]] = caption
        if firsts:
            self.caption_vectors = dict(zip(firsts, self.captions.encode_texts(list(firsts.values()))))

    def _vector_row(self, item: dict) -> dict:
        row = {"sample_id": item["sample_id"], "modality": item["modality"]}
        if item["sample_id"] in self.vectors:
            media, texts = self.vectors[item["sample_id"]]
            model = self.config.model_of(item["modality"])
            row |= {
                "model": _folder_name(model),
                "media": media.astype(np.float16),
                "texts": [{"text": t["text"], "embedding": texts[t["text"]].astype(np.float16)} for t in item["texts"]],
            }
        if item["sample_id"] in self.caption_vectors:
            row |= {
                "caption": self.caption_vectors[item["sample_id"]].astype(np.float16),
                "caption_model": _folder_name(self.config.caption_model),
            }
        return row

    def _score_texts(self, encoder, items: list[dict], media_embeddings: dict[str, np.ndarray]) -> None:
        texts = [t["text"] for item in items for t in item["texts"]]
        if not texts:
            return
        text_embeddings = iter(
            np.concatenate([encoder.encode_texts(texts[i : i + 256]) for i in range(0, len(texts), 256)])
        )
        for item in items:
            pictures = media_embeddings[item["sample_id"]]  # (n, d): the mean over them of each cosine
            by_text = {}
            for text in item["texts"]:
                by_text[text["text"]] = embedding = next(text_embeddings)
                text["align_score"] = float((pictures @ embedding).mean())
            mean = pictures.mean(axis=0)  # a video's frames averaged: the clip's embedding
            self.vectors[item["sample_id"]] = (mean / max(float(np.linalg.norm(mean)), 1e-12), by_text)


def _folder_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _chunks(pairs: Iterator[tuple], size: int) -> Iterator[tuple[tuple, tuple]]:
    """(owners, tensors) of at most `size` pairs at a time."""
    chunk = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) == size:
            yield tuple(zip(*chunk))
            chunk = []
    if chunk:
        yield tuple(zip(*chunk))


def _overlapped(chunks: Iterator) -> Iterator:
    """The chunks, each next one made on a worker thread while the caller uses the current one."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(next, chunks, None)
        while (chunk := pending.result()) is not None:
            pending = pool.submit(next, chunks, None)
            yield chunk


def report(settings: ScoringConfig) -> dict:
    """What a version records of how it was aligned: each part's model identity and threshold."""
    from ..models.encoders import identity

    return {
        KINDS[modality].aligned_by: {"model": identity(settings.model_of(modality)), "min_score": part.min_score}
        for modality, part in settings.parts().items()
    }
