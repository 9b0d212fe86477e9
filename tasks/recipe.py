"""Recipes: one YAML file per dataset, validated into typed models with errors that name the bad key.

A recipe is its sections, each the settings model of the part that reads it, declared beside that part's code:
`network:` the collect stage's (tasks/stages/collect.py), `shards:` how work is cut (tasks/core/shards.py),
`clean:` and `features:` the clean stage's, each media kind's own section under `clean:` (tasks/media/), `filter:`,
`align:`, `dedupe:` and `split:` their stages', `publish:` the tars' (tasks/publish/tars.py). This module only
assembles them: a setting and its default are written once, where they are used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from .core.code import stage_code_digest
from .core.settings import Strict
from .core.shards import ShardConfig
from .media.kinds import KINDS
from .publish.card import Recorded
from .publish.tars import PublishConfig
from .sources import SourceConfig
from .stages.align import AlignConfig
from .stages.blocklist import BlocklistFile, read_entries
from .stages.clean import CleanConfig, FeaturesConfig
from .stages.collect import NetworkConfig
from .stages.dedupe import DedupeConfig
from .stages.filter import FilterConfig, FilterSettings
from .stages.generate import GenerateConfig
from .stages.split import SplitConfig


class Recipe(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    source: SourceConfig | None = None  # one source; or `sources:`, a list
    sources: tuple[SourceConfig, ...] = ()
    network: NetworkConfig = NetworkConfig()
    shards: ShardConfig = ShardConfig()
    keep_work: bool = False  # keep the work folder after publishing (for debugging); it holds a copy of the media
    clean: CleanConfig = CleanConfig()
    features: FeaturesConfig = FeaturesConfig()
    generate: GenerateConfig = GenerateConfig()
    filter: FilterConfig = FilterConfig()
    align: AlignConfig = AlignConfig()
    dedupe: DedupeConfig = DedupeConfig()
    split: SplitConfig = SplitConfig()
    publish: PublishConfig = PublishConfig()
    blocklist: tuple[BlocklistFile, ...] = ()  # media never published (tasks/stages/blocklist.py)

    @model_validator(mode="after")
    def _one_way_to_name_sources(self):
        if (self.source is None) == (not self.sources):
            raise ValueError("give the sources as `sources:` (a list) or one `source:`, not both or neither")
        names = [s.name for s in self.all_sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"source names must be unique; repeated: {', '.join(repeated)}")
        self._measured_what_filters_judge()
        self._scored_what_embeddings_decide()
        for listed in self.blocklist:  # a list that cannot be read stops the recipe, not a build's workers
            try:
                read_entries(listed.file, listed.kind)
            except (OSError, ValueError) as e:
                raise ValueError(f"blocklist {listed.file}: {e}") from None
        for key, named in (
            ("captions.drop", self.dedupe.captions.drop),
            ("prefer_sources", self.dedupe.prefer_sources),
        ):
            unknown = sorted(set(named) - set(names))
            if unknown:
                raise ValueError(f"dedupe.{key} names no source of this recipe: {', '.join(unknown)}")
        return self

    def _measured_what_filters_judge(self) -> None:
        """Each source's own thresholds are filter's keys, and a threshold on a score clean measures only
        when asked needs that measure asked for."""
        for source in self.all_sources:
            try:
                self.filter.for_source(source.filter)
            except ValidationError as e:
                wrong = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'filter'}: {err['msg']}" for err in e.errors())
                raise ValueError(f"source {source.name}'s filter: {wrong}") from None
        measures = {
            "motion": ("clean.video.motion: true", self.clean.video.motion),
            "speech_ratio": ("clean.audio.voice_activity (or clean.video.voice_activity): true",
                             self.clean.audio.voice_activity or self.clean.video.voice_activity),
            "text_area": ("clean.image.ocr (or clean.video.ocr): detect",
                          self.clean.image.ocr != "off" or self.clean.video.ocr != "off"),
            "wer": ("generate.transcript (e.g. `transcript: {}`)", self.generate.transcript is not None),
        }  # fmt: skip
        if self.clean.video.ocr != "off" and self.features.keyframes is None:
            raise ValueError("clean.video.ocr reads the keyframes: set features.keyframes (e.g. `keyframes: {}`)")
        for where, judged in (("filter", self.filter.model_dump()), *self._source_filters()):
            for score, (switch, on) in measures.items():
                keys = [k for k in (f"min_{score}", f"max_{score}") if judged.get(k) is not None]
                if keys and not on:
                    raise ValueError(f"{where}.{keys[0]} judges the {score} score: set {switch}")

    def _scored_what_embeddings_decide(self) -> None:
        """Semantic dedupe of media compares the align models' embeddings, and a generated caption replaces
        others by its align score: the modality's align model must be given."""
        caption = self.generate.caption
        replacing = caption.modalities if caption and caption.mode == "replace_if_better" else ()
        for modality in ("image", "video", "audio"):
            part = KINDS[modality].aligned_by
            if modality in self.align.parts():
                continue
            if getattr(self.dedupe.semantic, modality):
                raise ValueError(
                    f"dedupe.semantic.{modality} compares the embeddings of align.{part}.model: give align.{part}"
                )
            if modality in replacing:
                raise ValueError(
                    f"generate.caption.mode replace_if_better compares {modality} captions by align.{part}'s "
                    f"scores: give align.{part} (or caption only `modalities` it scores)"
                )

    def _source_filters(self) -> list[tuple[str, dict]]:
        return [(f"source {s.name}'s filter", s.filter) for s in self.all_sources if s.filter]

    @property
    def filtering(self) -> FilterSettings:
        """The filter stage's settings: the recipe's thresholds, and each source's own."""
        by_source = {s.name: s.filter for s in self.all_sources if s.filter}
        return FilterSettings(**self.filter.model_dump(), by_source=by_source)

    @property
    def all_sources(self) -> tuple[SourceConfig, ...]:
        return (self.source,) if self.source is not None else self.sources

    def recorded(self) -> Recorded:
        """What a version records of this recipe (its manifest, stats and card)."""
        return Recorded(self.model_dump(mode="json"), self.all_sources, self.split, self.align)

    def fingerprint(self) -> str:
        """The build key: the recipe as written plus the stage code, not the folder it runs from.

        Two checkouts of the same code building the same recipe agree on it, so they share committed
        work and versions; a code change starts a fresh build rather than mixing old and new shards.
        """
        payload = {"recipe": self.model_dump(mode="json"), "code": stage_code_digest()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


class RecipeError(ValueError):
    pass


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"recipe not found: {path}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in e.errors()
        )
        raise RecipeError(f"{path}: {problems}") from None
    return recipe
