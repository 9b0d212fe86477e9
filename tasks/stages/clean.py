"""Clean: clean and describe the texts, decode the media once, record its facts, normalize its encoding
(or keep the facts a download's resize already measured: tasks/fetch/resize.py).

Texts are repaired, masked and described (tasks/media/text.py); empty and repeated ones are dropped one
by one; an item left with no text is rejected (`text:empty`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model

from ..core.schema import with_scores
from ..core.settings import Strict
from ..media import MediaError
from ..media.audio import LogMelConfig
from ..media.kinds import KINDS, MediaKind
from ..media.text import Tokenize, TokenizeConfig, clean_texts, load_language_model
from ..media.video import KeyframesConfig
from .stage import Reject, RowStage


class CleanBase(Strict):
    """The recipe's `clean:` beside each media kind's own section."""

    max_image_pixels: int = Field(64_000_000, gt=0)  # decompression-bomb guard
    # emails, URLs and phone numbers in texts: "mask" replaces them ([email], [url], [phone]), "flag"
    # only notes them in the text's flags, "keep" leaves them unseen
    pii: Literal["mask", "flag", "keep"] = "mask"


# `clean:` is CleanBase and, under each media kind's name, that kind's settings (tasks/media/kinds/: how an
# image, a recording or a video is published), so a new kind brings its own section
CleanConfig = create_model(
    "CleanConfig",
    __base__=CleanBase,
    __module__=__name__,
    **{name: (kind.Settings, kind.Settings()) for name, kind in KINDS.items() if kind.Settings is not None},
)


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


class CleanSettings(CleanConfig):
    """The recipe's `clean:` and the `features:` clean computes."""

    features: FeaturesConfig = FeaturesConfig()


# the normalized media and what clean measures of it (tasks/media/kinds/), and the cleaned texts
CLEAN_WRITES = frozenset(
    {
        "texts", "media_bytes", "media_ext", "media_size", "sidecars", "features", "sha256", "scores",
        "width", "height", "duration_s", "sample_rate", "channels", "fps", "num_frames", "video_codec",
        "audio_codec", "audio_duration_s", "phash", "audio_fingerprint", "sound_print", "sound_landmarks",
        "keyframe_phashes", "segments", "clip_start_s", "clip_end_s",
    }
)  # fmt: skip


class CleanStage(RowStage):
    name = "clean"
    Config = CleanSettings
    reads = frozenset({"media_bytes", "texts"})
    writes = CLEAN_WRITES

    def __init__(self, config: CleanSettings | None = None, /, **fields):
        super().__init__(config, **fields)
        self.kinds: dict[str, MediaKind] = {}  # each made with these settings when its first item comes
        self.tokenize = None

    def setup(self) -> None:
        load_language_model()  # ~100 MB, once per worker, not on the first item
        if self.config.features.tokenize:
            self.tokenize = Tokenize(**self.config.features.tokenize.model_dump())

    def _kind(self, modality: str) -> MediaKind:
        if modality not in self.kinds:
            self.kinds[modality] = KINDS[modality](self.config)
        return self.kinds[modality]

    def check(self, row: dict):
        texts, dropped = clean_texts(row["texts"] or [], self.config.pii)
        if not texts and not row["part_of"]:  # checked first: no decode for an item that cannot be kept
            return Reject("text:empty", f"{len(dropped)} text(s), all empty: {[t['text'] for t, _ in dropped][:5]!r}")
        try:
            facts = self._kind(row["modality"]).facts(row)
        except MediaError as e:
            return Reject(f"decode:{e.code}", e.detail)
        except Exception as e:  # an input nobody foresaw must not fail the build: reject it, visibly
            return Reject("decode:unexpected", f"{type(e).__name__}: {e}")
        if found := facts.pop("_texts", None):  # read in the media itself (OCR): cleaned as the source's are
            read, unusable = clean_texts([{**t, "source": row["source"]} for t in found], self.config.pii)
            texts, dropped = texts + read, dropped + unusable
        for text, reason in dropped:
            self.drop_text(row, text, reason)
        if self.tokenize is not None:
            texts = self.tokenize(texts)
        if "_scores" not in facts:  # a kind that measures nothing while decoding (a document)
            return {**row, **facts, "texts": texts}
        scores = facts.pop("_scores")  # measured while decoding; filters judge them
        return with_scores({**row, **facts, "texts": texts}, **scores)
