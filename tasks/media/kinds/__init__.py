"""Media kinds: one class per modality, a module each, registered in KINDS.

A kind owns everything the build does differently for its items: its file extensions, how clean decodes and
normalizes it (the facts it fills) under its own `clean:` section, which of its signatures dedupe compares
and how, the `align:` part that scores it, its tar members and their JSON schema, its data card task names
and its stats. To add a modality, write its module here and add its class to KINDS; filter rules name the
modality they judge (tasks/stages/filter.py).
"""

from __future__ import annotations

from .audio import Audio, SoundCheck
from .base import Fetch, MediaKind, Pair
from .document import Document
from .image import Image
from .video import Video

__all__ = [
    "KINDS",
    "SIGNATURE_COLUMNS",
    "Audio",
    "Fetch",
    "Image",
    "MediaKind",
    "Pair",
    "SoundCheck",
    "Video",
    "modality_of",
]

# in the order a version's tars and card list them
KINDS: dict[str, type[MediaKind]] = {kind.name: kind for kind in (Image, Audio, Video, Document)}


SIGNATURE_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(c for kind in KINDS.values() for c in kind.signatures))


def modality_of(name: str) -> str | None:
    """The kind of a file by its extension, or None."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return next((kind.name for kind in KINDS.values() if ext in kind.extensions), None)
