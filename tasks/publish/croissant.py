"""Croissant metadata (`croissant.json`, MLCommons Croissant 1.0) for a version about to be committed.

It describes the files as they are: each tar (a FileObject with its sha256), the media inside them (a
FileSet per modality and container, contained in that modality's tars), and the Parquet index of every
split as one record set whose fields are the index's scalar columns, so that `mlcroissant` can validate
the version and iterate its items without mmetl.
"""

from __future__ import annotations

import json
import mimetypes
from typing import TYPE_CHECKING

import pyarrow as pa

from ..core.schema import SAMPLE_SCHEMA
from ..media.kinds import KINDS

if TYPE_CHECKING:
    from .card import Version

CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
# the index columns the record set carries (lists and the lineage stay in the Parquet files)
INDEX_FIELDS = ["sample_id", "group_id", "source", "modality", "split", "media_ext", "media_size", "width",
                "height", "duration_s", "sha256", "tar", "key"]  # fmt: skip
DATA_TYPES = {pa.string(): "sc:Text", pa.int32(): "sc:Integer", pa.int64(): "sc:Integer", pa.float64(): "sc:Float"}
MIME = {"flac": "audio/flac", "mkv": "video/x-matroska", "jpg": "image/jpeg", "webp": "image/webp"}


def _media_sets(v: Version, tars: list[str]) -> list[dict]:
    """A FileSet per modality and media extension: the media inside that modality's tars."""
    sets = []
    for modality in v.modalities:
        inside = [{"@id": t} for t in tars if t.split("/", 1)[1].startswith(f"{modality}-")]
        composite = KINDS[modality].composite
        if composite:  # a document's media are its pictures, members `<n>.<ext>`
            found = {s.rsplit(".", 1)[-1] for s in v.tar_members[modality] if s not in ("json", "txt")}
        else:
            found = set(v.column("media_ext", modality))
        for ext in sorted(found):
            sets.append(
                {
                    "@type": "cr:FileSet",
                    "@id": f"{modality}-{ext}",
                    "name": f"{modality}-{ext}",
                    "description": f"the {modality} media ({ext}) inside the {modality} tars"
                    if not composite
                    else f"the {modality}s' pictures ({ext}) inside the {modality} tars",
                    "containedIn": inside,
                    "encodingFormat": MIME.get(ext)
                    or mimetypes.guess_type(f"x.{ext}")[0]
                    or "application/octet-stream",
                    "includes": f"*.{ext}",
                }
            )
    return sets


def metadata(v: Version) -> bytes:
    tars = sorted(name for name in v.files if name.endswith(".tar"))
    distribution = [_file(name, v.files[name], "application/x-tar") for name in tars] + _media_sets(v, tars)
    fields = [
        {
            "@type": "cr:Field",
            "@id": f"index/{name}",
            "name": name,
            "dataType": DATA_TYPES[SAMPLE_SCHEMA.field(name).type if name in SAMPLE_SCHEMA.names else pa.string()],
            "source": {"fileSet": {"@id": "index-files"}, "extract": {"column": name}},
        }
        for name in INDEX_FIELDS
    ]
    licenses = sorted({s.license or "unknown" for s in v.recipe.sources})
    document = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": v.dataset,
        "description": f"{v.dataset}, version {v.partition}: multimodal items with their texts, built by mmetl",
        "url": f"versions/{v.partition}",
        "version": "1.0.0",
        "citeAs": f"{v.dataset}, version {v.partition} (built with mmetl)",
        "datePublished": v.partition if _is_date(v.partition) else None,
        "license": licenses[0] if len(licenses) == 1 else licenses,
        "distribution": distribution
        + [
            {
                "@type": "cr:FileSet",
                "@id": "index-files",
                "name": "index-files",
                "description": "the Parquet index of every split",
                "encodingFormat": "application/x-parquet",
                "includes": "*/index.parquet",
            }
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": "index",
                "name": "index",
                "description": "one record per published item: its identity, media facts, split, and tar + key",
                "key": {"@id": "index/sample_id"},
                "field": fields,
            }
        ],
    }
    document = {k: v for k, v in document.items() if v is not None}
    return json.dumps(document, indent=2).encode()


def _file(name: str, entry: dict, encoding: str) -> dict:
    return {
        "@type": "cr:FileObject",
        "@id": name,
        "name": name,
        "contentUrl": name,
        "contentSize": f"{entry['bytes']} B",
        "encodingFormat": encoding,
        "sha256": entry["sha256"],
    }


def _is_date(text: str) -> bool:
    return len(text) == 10 and text[4] == "-" and text[7] == "-"
