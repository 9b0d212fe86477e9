"""Recipes: one YAML file per dataset, validated into typed models with errors that name the bad key."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator, model_validator

from .sources import SourceConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DownloadResizeConfig(Strict):
    """Downloaded images resized as they arrive, with img2dataset's options (`image_size: 256,
    resize_mode: keep_ratio` is img2dataset's default), so a URL list is never stored at full size;
    in the one decode that also measures them for clean (tasks/fetch/resize.py)."""

    image_size: int = Field(256, ge=8, le=16384)
    resize_mode: Literal["keep_ratio", "keep_ratio_largest", "center_crop", "border"] = "keep_ratio"
    resize_only_if_bigger: bool = True
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = Field(95, ge=0, le=100)  # for png: the compression level, 0-9

    @model_validator(mode="after")
    def _png_level(self):
        if self.encode_format == "png" and self.encode_quality > 9:
            raise ValueError("for png, encode_quality is the compression level, 0 to 9")
        return self


class NetworkConfig(Strict):
    """How media is downloaded from http(s) URLs (URL lists, video links)."""

    # hosts (names or addresses, CIDR ranges allowed) that may be fetched although they resolve to a
    # private, loopback or link-local address; every other such address is refused, after redirects too
    allow_hosts: tuple[str, ...] = ()
    timeout_s: float = Field(20.0, gt=0)
    retries: int = Field(2, ge=0, le=10)  # transient failures only (timeouts, 429, 5xx), with backoff
    max_bytes: ByteSize = Field(ByteSize(64 * 2**20), gt=0)  # per image download; larger is too_large
    max_video_bytes: ByteSize = Field(ByteSize(2 * 2**30), gt=0)  # per video or audio download
    threads: int = Field(16, ge=1, le=256)  # downloads in flight per worker
    per_host: int = Field(4, ge=1)  # downloads in flight per host, per worker
    per_host_rps: float = Field(0, ge=0)  # requests per second per host and worker; 0: unlimited
    user_agent_token: str | None = "mmetl"
    # X-Robots-Tag directives that opt an image out, as img2dataset honours them; [] to ignore them
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    video_format: str = "bv*[height<=480]+ba/b[height<=480]/bv*+ba/b"  # yt-dlp format selection, video
    audio_format: str = "ba/b"  # yt-dlp format selection, audio-only items
    subtitles: tuple[str, ...] = ("en",)  # subtitle languages saved as texts of kind subtitle
    resize: DownloadResizeConfig | None = None  # downloaded images kept as they came unless set


class ShardConfig(Strict):
    """How work is cut. A shard is the unit of work, retry and resume (one task per step and shard);
    a batch is what a worker holds in memory at once. Both are bounded by items and by bytes
    ("256MB", "1GiB" or a number). Shards are also cut small enough that every worker gets one."""

    max_items: int = Field(2000, ge=1, le=1_000_000)
    max_bytes: ByteSize = Field(ByteSize(256 * 2**20), gt=0)
    batch_items: int = Field(256, ge=1, le=100_000)
    batch_bytes: ByteSize = Field(ByteSize(64 * 2**20), gt=0)


class ResizeConfig(Strict):
    short_side: int | None = Field(None, ge=8)  # scale so the shorter side is this (never up)
    center_crop: int | None = Field(None, ge=8)  # then keep the centered square of this side


class ImageCleanConfig(Strict):
    """How images are published: upright RGB, in this format, optionally resized (torchvision's
    Resize(256) + CenterCrop(224) is `resize: {short_side: 256, center_crop: 224}`)."""

    resize: ResizeConfig | None = None
    format: Literal["jpg", "png", "webp"] = "jpg"
    quality: int = Field(95, ge=50, le=100)
    animated: Literal["first_frame", "reject"] = "first_frame"  # GIF/WebP/APNG with several frames


class AudioCleanConfig(Strict):
    """How audio is published (FLAC): resampled by torchaudio to `sample_rate` (null: the file's own),
    mixed down to one channel with `mono`."""

    sample_rate: int | None = Field(None, ge=1000, le=384_000)
    mono: bool = False


class VideoCleanConfig(Strict):
    """Videos are published as they came unless they exceed `short_side` or `max_fps`: those are
    re-encoded (H.264 at `crf`, AAC sound, MP4), frame times kept. Their sound is measured and gets a
    log-mel (features.log_mel) at clean.audio's rate either way."""

    short_side: int | None = Field(None, ge=16)  # shorter side at most this (never up)
    max_fps: float | None = Field(None, gt=0)  # at most this many frames a second (frames dropped)
    crf: int = Field(23, ge=0, le=51)  # x264 quality: 18 near-transparent, 28 small


class CleanConfig(Strict):
    # an RGB JPEG needing no change is published as it came; other images are encoded per `image`;
    # audio not in a FLAC file becomes FLAC; videos keep their container unless `video` reshapes them
    image: ImageCleanConfig = ImageCleanConfig()
    audio: AudioCleanConfig = AudioCleanConfig()
    video: VideoCleanConfig = VideoCleanConfig()
    max_image_pixels: int = Field(64_000_000, gt=0)  # decompression-bomb guard
    # emails, URLs and phone numbers in texts: "mask" replaces them ([email], [url], [phone]), "flag"
    # only notes them in the text's flags, "keep" leaves them unseen
    pii: Literal["mask", "flag", "keep"] = "mask"


class FilterConfig(Strict):
    min_image_side: int = Field(32, ge=1)
    max_image_aspect: float = Field(4.0, ge=1.0)
    min_audio_s: float = Field(0.5, ge=0)
    max_audio_s: float = Field(60.0, gt=0)
    min_video_s: float = Field(0.5, ge=0)
    max_video_s: float = Field(600.0, gt=0)
    min_video_side: int = Field(32, ge=1)  # filter:video_too_small
    # frames per second by timestamps (filter:low_frame_rate, filter:high_frame_rate: broken clocks)
    min_video_fps: float = Field(1.0, ge=0)
    max_video_fps: float = Field(240.0, gt=0)
    min_caption_words: int = Field(2, ge=0)
    max_caption_words: int = Field(200, ge=1)
    # texts in other languages are dropped (filter:language) when the identifier is at least
    # `language_min_score` sure; empty: every language. Short captions score low and are kept.
    languages: tuple[str, ...] = ()
    language_min_score: float = Field(0.5, ge=0, le=1)
    drop_boilerplate: bool = True  # texts flagged boilerplate ("image may contain", a file name) go
    # the largest per-channel standard deviation of a 128-255 px copy below which an image is blank
    # (filter:blank_image): a flat frame, whatever its colour
    min_image_std: float = Field(2.0, ge=0)
    # audio, measured on the decoded samples: share of 20 ms windows under -50 dBFS (filter:mostly_silent),
    # share of samples at full scale (filter:clipped), and the published rate (filter:low_sample_rate)
    # items whose source states a license outside this list (LAION's LICENSE, COCO's licenses) are
    # rejects (filter:license); empty: any. require_license also rejects items that state none.
    licenses: tuple[str, ...] = ()
    require_license: bool = False
    # with align.heads: images whose aesthetic score is below (filter:aesthetic), or nsfw score above
    # (filter:nsfw); null: not judged. These rules run after the models have scored.
    min_aesthetic: float | None = None
    max_nsfw: float | None = None
    max_silence_ratio: float = Field(0.9, ge=0, le=1)
    max_clipping_ratio: float = Field(0.01, ge=0, le=1)
    min_sample_rate: int = Field(8000, ge=0)
    # documents (tasks/stages/documents.py), judged once their pictures are: pictures left (filter:few_images,
    # filter:many_images), words left (filter:short_document), and the share of pictures dropped
    # (filter:images_dropped); a document left with no picture is a document:no_images reject
    min_document_images: int = Field(1, ge=1)
    max_document_images: int = Field(30, ge=1)
    min_document_words: int = Field(10, ge=0)
    max_document_images_dropped: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _bounds(self):
        for lo, hi in (
            ("min_audio_s", "max_audio_s"),
            ("min_video_s", "max_video_s"),
            ("min_video_fps", "max_video_fps"),
            ("min_caption_words", "max_caption_words"),
            ("min_document_images", "max_document_images"),
        ):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo} ({getattr(self, lo)}) is above {hi} ({getattr(self, hi)})")
        return self


def _model_of_kind(path: str, kinds: tuple[str, ...], what: str) -> str:
    """A local model directory of one of `kinds`, checked when the recipe loads (nothing is downloaded)."""
    from .models.encoders import ModelError, model_kind

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


class AlignConfig(Strict):
    require_video_audio: bool = True  # a video without an audio track is rejected
    max_av_drift_s: float = Field(0.25, ge=0)  # |video duration - audio track duration|
    # alignment scores (texts[i].align_score, scores.align_max), each part optional
    image_text: ImageTextConfig | None = None
    video_text: VideoTextConfig | None = None
    audio_text: AudioTextConfig | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: a GPU where the worker has one
    gpu_share: float = Field(1.0, gt=0, le=1)  # the part of a GPU each scoring worker asks Ray for
    # publish the models' media and text embeddings (float16) beside each split's index, by sample id
    keep_embeddings: bool = False
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


class CaptionDedupeConfig(Strict):
    """Items whose captions are near copies of each other's: one group (a caption seen in training must
    not be a test caption), reported per source, and dropped for the sources listed in `drop`."""

    # Jaccard similarity of the word 3-shingle sets at or above which two captions are one; null: off
    threshold: float | None = Field(0.8, gt=0, le=1)
    drop: tuple[str, ...] = ()  # sources whose items are rejects (duplicate:caption) when another is kept
    # a caption (or cluster of near-identical ones) on this many items is boilerplate ("image", "stock
    # photo"): flagged in the report, never used to group or drop
    boilerplate_items: int = Field(50, ge=2)


class DedupeConfig(Strict):
    """Which items are copies of one another. Copies form clusters; one member is kept, the others are
    rejects naming it, and the whole cluster is one group, so no copy can sit in another split."""

    # pHash bits two images may differ by and still be one picture; null turns near-duplicates off.
    # Measured on real photos: re-encodes, half-size copies, PNG/WebP 0 bits, +20% brightness up to 6,
    # a 2% border crop up to 8; distinct photographs 20 and more apart.
    image_radius: int | None = Field(8, ge=0, le=16)
    # Chromaprint bit error rate at which two sounds are one recording; null: off. Measured on real
    # speech: MP3 and 16 kHz FLAC re-encodes up to 0.03, 50 ms trims up to 0.09, distinct 0.24 and more.
    audio_max_ber: float | None = Field(0.15, gt=0, lt=0.5)
    # landmarks (pairs of spectral peaks in a sound's first 4 s) two sounds share at one alignment to be
    # candidates; null: off. Measured on copies of words, noises and syllables (MP3 64 kbit/s, AAC, Opus,
    # 8 kHz, +-6 dB, 50 ms trims of sounds of 0.3 s and more): 7 and more in common. Two clips of up to 4 s
    # must also have prints within `short_audio_max_db`
    audio_min_landmarks: int | None = Field(5, ge=2)
    # clips up to 4 s have a coarse log-mel print: the mean dB difference at which two are candidates. Clips
    # under 0.3 s, with under 20 landmarks, or published before landmarks were recorded are also searched
    # by it; null: off
    short_audio_max_db: float | None = Field(4.0, gt=0, le=20)
    # Every signature match above is only a candidate: two sounds are one recording when their waveforms,
    # lined up at the best lag, correlate at least this well in every audible 40 ms window
    # (tasks/similar/waveform.py). Measured: MP3 64-320 kbit/s, AAC, Opus, 8-48 kHz, +-6 dB and 50 ms
    # trims 0.87 and more; distinct words, voices and noises 0.22 and less.
    audio_min_similarity: float = Field(0.6, gt=0, le=1)
    # median pHash distance of a video's keyframes (one a second) to another's; null: off. (Sound
    # tracks that match as sounds do only put two videos in one group.)
    video_radius: int | None = Field(8, ge=0, le=16)
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


class LeakGuardConfig(Strict):
    """The leakage guard's own search, wider than dedupe's defaults so that it sees a copy dedupe's
    thresholds let through (each is widened further to dedupe's when that is wider); its sound candidates
    are verified on the waveform as dedupe's are (`dedupe.audio_min_similarity`)."""

    # pictures have no check on the pixels behind the hash, so their radius is dedupe's default: synthetic
    # pictures (the demo's shapes) lie 10-12 bits apart, and a wider guard would fail builds on them
    image_radius: int = Field(8, ge=0, le=16)
    # sounds are verified on the waveform, so their search can be wider than dedupe's
    audio_max_ber: float = Field(0.25, gt=0, lt=0.5)
    audio_min_landmarks: int = Field(3, ge=2)  # at most dedupe's
    short_audio_max_db: float = Field(6.0, gt=0, le=20)  # copies measured 2.7 dB apart at most
    video_radius: int = Field(8, ge=0, le=16)


class SplitConfig(Strict):
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test
    salt: str = "mmetl"  # change it to draw a different (still deterministic) split
    # new groups are dealt out per stratum, so that each modality and source has its own 8:1:1;
    # []: one stratum over everything
    stratify: tuple[Literal["modality", "source"], ...] = ("modality", "source")
    # a val or test item found a copy of a train item (of this or an earlier version) by the guard:
    # `fail` the build naming the pairs, or `move` the new group into its copy's split (a published
    # group never moves; a leak that only moving one would mend still fails)
    on_leak: Literal["fail", "move"] = "fail"
    guard: LeakGuardConfig = LeakGuardConfig()

    @model_validator(mode="after")
    def _sum_to_one(self):
        if abs(sum(self.ratios) - 1.0) > 1e-6 or min(self.ratios) < 0:
            raise ValueError(f"split.ratios must be non-negative and sum to 1, got {self.ratios}")
        return self


class PublishConfig(Strict):
    """How a version's tars are cut: per split and modality, across the whole version, each at most
    this big and this many items (an item bigger than `shard_max_bytes` has a tar of its own)."""

    shard_max_bytes: ByteSize = Field(ByteSize(256 * 2**20), gt=0)
    shard_max_items: int = Field(10_000, ge=1, le=1_000_000)


class LogMelConfig(Strict):
    n_mels: int = Field(80, ge=8, le=512)
    n_fft: int = Field(1024, ge=64)
    hop_length: int = Field(256, ge=16)


class KeyframesConfig(Strict):
    count: int = Field(8, ge=1, le=256)  # spread evenly over each video
    short_side: int = Field(224, ge=16)


class TokenizeConfig(Strict):
    tokenizer: str  # a local tokenizer.json (Hugging Face `tokenizers`: BERT's, CLIP's, your own)
    max_length: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _exists(self):
        if not Path(self.tokenizer).is_file():
            raise ValueError(f"no tokenizer file at {self.tokenizer}")
        return self


class FeaturesConfig(Strict):
    """What clean computes beside the media and publishes with it."""

    # token ids per text (`tokens`, cut at max_length) and the uncut length (`n_tokens`); null: none
    tokenize: TokenizeConfig | None = None

    # a log-mel spectrogram of each audio clip (and video's sound track), `<key>.mel.npy`, float16
    # n_mels x frames, its parameters in the item's `features`; null: none
    log_mel: LogMelConfig | None = None

    # thumbnails spread evenly over each video, `<key>.keyframe<i>.jpg` (their times in `features`),
    # for alignment scoring and browsing; null: none
    keyframes: KeyframesConfig | None = None


class Recipe(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    source: SourceConfig | None = None  # one source; or `sources:`, a list
    sources: tuple[SourceConfig, ...] = ()
    network: NetworkConfig = NetworkConfig()
    shards: ShardConfig = ShardConfig()
    keep_work: bool = False  # keep the work folder after publishing (for debugging); it holds a copy of the media
    clean: CleanConfig = CleanConfig()
    features: FeaturesConfig = FeaturesConfig()
    filter: FilterConfig = FilterConfig()
    align: AlignConfig = AlignConfig()
    dedupe: DedupeConfig = DedupeConfig()
    split: SplitConfig = SplitConfig()
    publish: PublishConfig = PublishConfig()

    @model_validator(mode="after")
    def _one_way_to_name_sources(self):
        if (self.source is None) == (not self.sources):
            raise ValueError("give the sources as `sources:` (a list) or one `source:`, not both or neither")
        names = [s.name for s in self.all_sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"source names must be unique; repeated: {', '.join(repeated)}")
        for key, named in (
            ("captions.drop", self.dedupe.captions.drop),
            ("prefer_sources", self.dedupe.prefer_sources),
        ):
            unknown = sorted(set(named) - set(names))
            if unknown:
                raise ValueError(f"dedupe.{key} names no source of this recipe: {', '.join(unknown)}")
        return self

    @property
    def all_sources(self) -> tuple[SourceConfig, ...]:
        return (self.source,) if self.source is not None else self.sources

    def fingerprint(self) -> str:
        """The build key: the recipe as written plus the stage code, not the folder it runs from.

        Two checkouts of the same code building the same recipe agree on it, so they share committed
        work and versions; a code change starts a fresh build rather than mixing old and new shards.
        """
        payload = {"recipe": self.model_dump(mode="json"), "code": stage_code_digest()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


@cache
def stage_code_digest() -> str:
    """sha256 over the source of the tasks package: everything that decides what a build writes."""
    package = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


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
