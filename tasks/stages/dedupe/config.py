"""The recipe's `dedupe:`: which items are copies, and which of a cluster stays."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ...core.settings import Strict
from ...models.encoders import MINILM
from ...similar.search import CopySearch


class CaptionDedupeConfig(Strict):
    """Items whose captions are near copies of each other's: one group (a caption seen in training must
    not be a test caption), reported per source, and dropped for the sources listed in `drop`."""

    # Jaccard similarity of the word 3-shingle sets at or above which two captions are one; null: off
    threshold: float | None = Field(0.8, gt=0, le=1)
    drop: tuple[str, ...] = ()  # sources whose items are rejects (duplicate:caption) when another is kept
    # a caption (or cluster of near-identical ones) on this many items is boilerplate ("image", "stock
    # photo"): flagged in the report, never used to group or drop
    boilerplate_items: int = Field(50, ge=2)


class SemanticConfig(Strict):
    """One modality's semantic dedupe (tasks/similar/semantic.py): items whose embeddings' cosine is at least
    1 − `epsilon` are one group; with `mode: reject` only the member the keep policy ranks first stays."""

    epsilon: float = Field(0.05, gt=0, lt=1)
    mode: Literal["group", "reject"] = "group"  # group: they share a split, nothing is removed
    clusters: int | None = Field(None, ge=1)  # k-means clusters; null: √(items)


class CaptionSemanticConfig(SemanticConfig):
    """Captions compared by meaning: the text model's embedding of each item's first caption."""

    # paraphrases sit lower on a sentence model's scale than copies of one picture do on CLIP's
    epsilon: float = Field(0.1, gt=0, lt=1)
    model: str = MINILM  # a sentence-transformers folder; all-MiniLM-L6-v2 is installed with mmetl

    @field_validator("model")
    @classmethod
    def _sentence_model(cls, name: str) -> str:
        from ...models.encoders import ModelError, model_kind, text_model_folder

        try:
            kind = model_kind(text_model_folder(name))
        except ModelError as e:
            raise ValueError(str(e)) from None
        if kind != "sentence":
            raise ValueError(f"{name} holds a {kind} model; captions need a sentence-transformers folder")
        return name


class SemanticDedupeConfig(Strict):
    """`dedupe.semantic:` per modality, each off unless given. Media are compared by the align models'
    embeddings (the score step's), captions by a sentence model's."""

    image: SemanticConfig | None = None
    video: SemanticConfig | None = None
    audio: SemanticConfig | None = None
    captions: CaptionSemanticConfig | None = None

    def parts(self) -> dict[str, SemanticConfig]:
        return {name: part for name in ("image", "video", "audio", "captions") if (part := getattr(self, name))}


class DedupeConfig(CopySearch):
    """Which items are copies of one another (the thresholds: tasks/similar/search.py). Copies form clusters;
    one member is kept, the others are rejects naming it, and the whole cluster is one group, so no copy can
    sit in another split."""

    captions: CaptionDedupeConfig = CaptionDedupeConfig()
    # which member of a cluster stays: `best` (most pixels, or samples a second and channels; then the
    # least edited; then one published as it came; then the most bytes for its size), `largest`,
    # `longest`, `earliest`
    keep: Literal["best", "largest", "longest", "earliest"] = "best"
    prefer_sources: tuple[str, ...] = ()  # a copy from these sources (in this order) stays, whatever the policy
    merge_texts: bool = True  # the copies' texts join the kept item
    # copies of items other partitions published are rejects (duplicate:published): building the same
    # source again as a new partition publishes nothing new
    against_published: bool = True
    semantic: SemanticDedupeConfig = SemanticDedupeConfig()  # after scoring: see tasks/stages/dedupe/semantic.py
