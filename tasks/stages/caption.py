"""Caption: a text of kind `synthetic` for each picture and video, written by a vision-language model
(`generate.caption`; tasks/models/captioner.py), as LAION-COCO and ShareGPT4V re-captioned their sources.

It runs after dedupe (no copy is captioned) and before the filter, on the media as clean published it (a video
by its middle keyframe, or its middle frame), so the caption goes through the text filters and align like any
text. Each records what wrote it (`generated_by`: the model's weights and the prompt, hashed). With
`mode: replace_if_better`, align keeps it only where it scores above every caption the item came with, and then
in their place (tasks/stages/align.py). Nothing is rejected here: an item whose picture cannot be read keeps
its texts, and `features.caption.skipped` says why.
"""

from __future__ import annotations

import io
from typing import Literal

import pyarrow as pa
from PIL import Image
from pydantic import Field, field_validator

from ..core import storage
from ..core.schema import DROPPED_TEXT_SCHEMA, REJECT_SCHEMA, SAMPLE_SCHEMA, table_of, with_feature
from ..core.settings import Strict
from ..core.stored_media import MediaFile
from ..media import MediaError
from ..media.text import clean_texts
from ..media.video import frames_spread
from ..models.captioner import Captioner, check_captioner, generated_by
from ..models.encoders import ModelError
from .stage import Resources, Stage, StageOutput


class CaptionConfig(Strict):
    """`generate.caption:` the model that writes a caption for each picture and video, and how."""

    model: str  # a local transformers folder of an image-text-to-text model (BLIP, Florence-2, Qwen2-VL, LLaVA)
    prompt: str = ""  # what a chat model is asked, or the words a captioning model continues ("" for BLIP: none)
    max_new_tokens: int = Field(40, ge=1, le=1024)
    num_beams: int = Field(1, ge=1, le=16)  # 1: greedy; either way the same picture gets the same caption
    batch_size: int = Field(16, ge=1, le=1024)  # pictures per `generate` call
    mode: Literal["add", "replace_if_better"] = "add"  # replace_if_better needs align's model for the modality
    modalities: tuple[Literal["image", "video"], ...] = ("image", "video")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpu_share: float = Field(1.0, gt=0, le=1)

    @field_validator("model")
    @classmethod
    def _loadable(cls, folder: str) -> str:
        try:
            check_captioner(folder)
        except ModelError as e:
            raise ValueError(str(e)) from None
        return folder


class CaptionSettings(CaptionConfig):
    media_dir: str  # where clean wrote `<shard>.media.parquet`


class CaptionStage(Stage):
    name = "caption"
    Config = CaptionSettings
    reads = frozenset({"texts", "sha256"})
    writes = frozenset({"texts", "features"})

    @classmethod
    def resources_for(cls, settings: dict, gpus: int) -> Resources:
        return Resources.for_model(settings, gpus)

    def setup(self) -> None:
        c = self.config
        self.model = Captioner(c.model, c.device, c.prompt, c.max_new_tokens, c.num_beams)
        self.by = generated_by(c.model, c.prompt or None, kind=self.model.kind)

    def start_shard(self, shard: str) -> None:
        self.media = MediaFile(storage.join(self.config.media_dir, f"{shard}.media.parquet"))

    def process(self, batch: pa.Table) -> StageOutput:
        rows = batch.to_pylist()
        wanted = [r for r in rows if r["modality"] in self.config.modalities and r["sha256"] and not r.get("part_of")]
        media = self.media.read([r["sample_id"] for r in wanted]) if wanted else {}
        pictures, skipped = {}, {}
        for row in wanted:
            try:
                pictures[row["sample_id"]] = _picture(row["modality"], *media[row["sample_id"]])
            except (MediaError, OSError, ValueError) as e:
                skipped[row["sample_id"]] = f"unreadable picture: {type(e).__name__}: {e}"
        captions = self._captions(pictures)
        out = []
        for row in rows:
            if row["sample_id"] in skipped:
                row = with_feature(row, "caption", {"skipped": skipped[row["sample_id"]]})
            elif row["sample_id"] in captions:
                said = {"text": captions[row["sample_id"]], "kind": "synthetic", "source": row["source"]}
                written, _ = clean_texts([{**said, "generated_by": self.by}], "mask")
                row = {**row, "texts": (row["texts"] or []) + written}
            out.append(row)
        return StageOutput(table_of(out, SAMPLE_SCHEMA), REJECT_SCHEMA.empty_table(), DROPPED_TEXT_SCHEMA.empty_table())

    def _captions(self, pictures: dict) -> dict[str, str]:
        ids, size = list(pictures), self.config.batch_size
        found = {}
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            found.update(zip(chunk, self.model.caption([pictures[i] for i in chunk])))
        return found


def _picture(modality: str, data: bytes, sidecars) -> Image.Image:
    """An image's picture; a video's middle keyframe (clean's thumbnails), or its middle frame."""
    if modality == "image":
        return Image.open(io.BytesIO(data)).convert("RGB")  # decoded here: a bad picture is this item's alone
    keyframes = [s["data"] for s in sidecars or [] if s["name"].startswith("keyframe")]
    if keyframes:
        return Image.open(io.BytesIO(keyframes[len(keyframes) // 2])).convert("RGB")
    return frames_spread(data, 1)[0].convert("RGB")
