"""Media files on storage with sidecar captions, and existing WebDataset tars."""

from __future__ import annotations

import fnmatch
import json
import tarfile
from collections.abc import Iterator
from typing import Literal

from ..core import storage
from ..media.kinds import modality_of
from .base import Row, Source, SourceError, caption
from .manifest import utf8_ok

SIDECARS = ("txt", "json")


def sidecar_texts(ext: str, data: bytes) -> list[dict]:
    """Texts from a `.txt` (the whole file) or a `.json` sidecar ("caption", "text" or "texts")."""
    value = data.decode("utf-8-sig")
    if ext == "txt":
        return caption(value)
    record = json.loads(value)
    if not isinstance(record, dict):
        raise ValueError("the JSON sidecar is not an object")
    texts = record.get("texts", record.get("captions"))
    if isinstance(texts, list):
        return [
            t
            for v in texts
            for t in (
                caption(v)
                if isinstance(v, str)
                else caption(v.get("text"), v.get("kind", "caption"))
                if isinstance(v, dict)
                else []
            )
        ]
    return caption(record.get("caption", record.get("text")))


class Folder(Source):
    """Media files under `uri` (a local folder or an s3:// prefix) whose `pattern` matches, each with a
    `<stem>.txt` or `<stem>.json` caption beside it."""

    kind: Literal["folder"]
    pattern: str = "*"  # fnmatch over the path below `uri`, e.g. "images/*.jpg"

    def rows(self) -> Iterator[Row]:
        fs, root = storage.filesystem(self.uri)
        prefix = self.uri.split("://", 1)[0] + "://" if "://" in self.uri else ""
        root = root.rstrip("/")
        paths = sorted(fs.find(root))
        if not paths and not fs.exists(root):
            raise SourceError(f"source {self.name}: {self.uri} does not exist")
        stems = {}
        for p in paths:
            stem, _, ext = p.rpartition(".")
            if ext in SIDECARS:
                stems.setdefault(stem, p)  # .json after .txt in sorted order: .json wins only alone
        for number, path in enumerate(p for p in paths if p.rpartition(".")[2] not in SIDECARS):
            key = path[len(root) + 1 :]
            if not fnmatch.fnmatch(key, self.pattern):
                continue
            if not utf8_ok(path):
                yield Row(number, error=f"file name is not UTF-8: {ascii(path)}")
                continue
            modality, sidecar = modality_of(path), stems.get(path.rpartition(".")[0])
            if modality is None:
                yield Row(number, media=prefix + path, error=f"extension of {key} is not a known media type")
            elif sidecar is None:
                yield Row(number, media=prefix + path, error="no sidecar caption (.txt or .json) beside it")
            else:
                try:
                    texts = sidecar_texts(sidecar.rpartition(".")[2], fs.cat_file(sidecar))
                except (UnicodeDecodeError, ValueError) as e:
                    yield Row(number, media=prefix + path, error=f"caption {sidecar}: {e}")
                    continue
                yield Row(number, key=key, media=prefix + path, modality=modality, texts=texts)


class WebDatasetTars(Source):
    """Existing WebDataset shards: `uri` is one tar or a folder of them; members sharing a key are one
    sample (the media member, and its .txt or .json caption). Media is read from the tar itself."""

    kind: Literal["webdataset"]

    def rows(self) -> Iterator[Row]:
        fs, root = storage.filesystem(self.uri)
        prefix = self.uri.split("://", 1)[0] + "://" if "://" in self.uri else ""
        tars = [root] if root.endswith(".tar") else sorted(p for p in fs.find(root) if p.endswith(".tar"))
        if not tars:
            raise SourceError(f"source {self.name}: no .tar under {self.uri}")
        number = 0
        for tar_path in tars:
            samples: dict[str, dict[str, bytes | None]] = {}
            with fs.open(tar_path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    key, _, ext = member.name.partition(".")
                    # sidecars are read now; media stays in the tar and is read by collect
                    samples.setdefault(key, {})[ext] = archive.extractfile(member).read() if ext in SIDECARS else None
            for key, members in samples.items():
                media = [ext for ext in members if modality_of(f"x.{ext}")]
                texts, error = [], None
                for ext in SIDECARS:
                    if ext in members:
                        try:
                            texts = sidecar_texts(ext, members[ext])
                            break
                        except (UnicodeDecodeError, ValueError) as e:
                            error = f"{key}.{ext}: {e}"
                if len(media) != 1:
                    error = f"sample {key} has {len(media)} media members ({', '.join(media) or 'none'})"
                uri = f"tar://{key}.{media[0]}::{prefix}{tar_path}" if len(media) == 1 else None
                yield Row(
                    number,
                    key=f"{tar_path.rsplit('/', 1)[-1]}/{key}",
                    media=uri,
                    modality=modality_of(f"x.{media[0]}") if len(media) == 1 else None,
                    texts=texts,
                    error=error,
                )
                number += 1
