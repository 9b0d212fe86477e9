"""Source adapters: one small class per annotation format. To add a format, write its class (a Source
subclass with `kind: Literal["..."]` and `rows()`) and add it to ADAPTERS."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from .activitynet import ActivityNet
from .audiocaps import AudioCaps
from .base import Row, Source, SourceError, sources_for_partition
from .clotho import Clotho
from .coco import Coco
from .conversations import Conversations
from .files import Folder, WebDatasetTars
from .flickr30k import Flickr30k
from .howto100m import HowTo100M
from .internvid import InternVid
from .kinetics import Kinetics
from .librispeech import LibriSpeech
from .llava import Llava
from .manifest import Manifest
from .mmc4 import Mmc4
from .msrvtt import MsrVtt
from .obelics import Obelics
from .urls import Urls
from .visual_genome import VisualGenome
from .voxceleb2 import VoxCeleb2
from .wavcaps import WavCaps
from .webvid import WebVid

ADAPTERS = (
    Manifest,
    Folder,
    WebDatasetTars,
    Coco,
    Flickr30k,
    Urls,
    Llava,
    AudioCaps,
    Clotho,
    MsrVtt,
    WebVid,
    VoxCeleb2,
    HowTo100M,
    ActivityNet,
    Kinetics,
    InternVid,
    LibriSpeech,
    WavCaps,
    Conversations,
    VisualGenome,
    Obelics,
    Mmc4,
)

# A recipe's source: the adapter is chosen by `kind`, and its own keys are validated by its class.
SourceConfig = Annotated[Union[ADAPTERS], Field(discriminator="kind")]  # noqa: UP007  (X | Y cannot unpack a tuple)

__all__ = ["ADAPTERS", "Row", "Source", "SourceConfig", "SourceError", "make_source", "sources_for_partition"]

_VALIDATOR = TypeAdapter(SourceConfig)


def make_source(**fields) -> Source:
    """A source from its recipe keys, validated as a recipe's would be."""
    return _VALIDATOR.validate_python(fields)
