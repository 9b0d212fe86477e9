"""The item model end to end, in process: one item per media file with all its texts, identical media
across names and sources merged, and media published once."""

from __future__ import annotations

import json
import tarfile

import pyarrow.parquet as pq

from tasks.core import storage
from tasks.sources import Source, make_source

from .helpers import build_in_process, real_photos


def write_manifest(folder, rows: list[dict]) -> Source:
    path = folder / "captions.jsonl"
    storage.write_bytes(str(path), "\n".join(json.dumps(r) for r in rows).encode())
    return make_source(name=folder.name, kind="manifest", uri=str(path))


def version_members(layout) -> list[str]:
    names = []
    for tar in storage.list_files(layout.version):
        if tar.endswith(".tar"):
            with tarfile.open(storage.join(layout.version, tar)) as archive:
                names += archive.getnames()
    return names


def test_five_captions_of_real_photos_are_one_item_published_once(tmp_path):
    photos = real_photos(turns=4)
    rows = []
    for name, data in photos.items():
        storage.write_bytes(str(tmp_path / "coco" / f"{name}.jpg"), data)
        rows += [{"media": f"{name}.jpg", "modality": "image", "text": f"{name}, caption {k}"} for k in range(5)]
    layout, manifest = build_in_process([write_manifest(tmp_path / "coco", rows)], str(tmp_path / "out"), workers=1)

    assert manifest["samples"] == len(photos) and manifest["texts"] == 5 * len(photos)
    members = version_members(layout)
    assert len([m for m in members if m.endswith(".jpg")]) == len(photos)
    index = pq.read_table(f"{layout.version}/train/index.parquet").to_pylist()
    assert all(len(row["texts"]) == 5 for row in index)
    assert all(t["lang"] and t["words"] == len(t["text"].split()) for row in index for t in row["texts"])
    stats = storage.read_json(f"{layout.version}/stats.json")
    assert sum(stats["text_languages"].values()) == manifest["texts"]
    # the published tars hold each media file once, whatever the number of captions: per item, three
    # tar headers, the JSON (every field of the member schema, null where unset: with five captions just
    # over 1 kB) and the caption, about 3.8 kB; per tar, its end blocks (under 11 kB). On photos of COCO's
    # size (166 kB on average here) that is 2.9 %; it is under 2 % from about 200 kB.
    tar_bytes = sum(s["tar_bytes"] for s in manifest["splits"].values())
    media_bytes = sum(s["media_bytes"] for s in manifest["splits"].values())
    tars = sum(len(s["tars"]) for s in manifest["splits"].values())
    assert media_bytes == sum(len(d) for d in photos.values())  # RGB JPEGs are published as they came
    assert tar_bytes - media_bytes < 4096 * len(photos) + 11 * 1024 * tars
    assert tar_bytes / media_bytes <= 1.03, tar_bytes / media_bytes


def test_the_same_bytes_under_two_names_and_two_sources_are_one_item_and_one_reject(tmp_path):
    photo = real_photos()["coffee-0"]
    storage.write_bytes(str(tmp_path / "coco" / "000123.jpg"), photo)
    storage.write_bytes(str(tmp_path / "flickr" / "photos" / "cup.jpg"), photo)
    storage.write_bytes(str(tmp_path / "flickr" / "photos" / "other.jpg"), real_photos()["rocket-0"])
    coco = write_manifest(
        tmp_path / "coco",
        [
            {"media": "000123.jpg", "modality": "image", "text": "a cup of coffee on a table"},
            {"media": "000123.jpg", "modality": "image", "text": "Coffee in a white cup"},
        ],
    )
    flickr = write_manifest(
        tmp_path / "flickr",
        [
            {"media": "photos/cup.jpg", "modality": "image", "text": "coffee  in a white cup"},
            {"media": "photos/cup.jpg", "modality": "image", "text": "a saucer and a spoon"},
            {"media": "photos/other.jpg", "modality": "image", "text": "a rocket on its launch pad"},
        ],
    )
    layout, manifest = build_in_process([coco, flickr], str(tmp_path / "out"))

    rejects = pq.read_table(f"{layout.version}/rejects.parquet").to_pylist()
    index = pq.read_table(f"{layout.version}/train/index.parquet").to_pylist() + [
        r
        for split in ("val", "test")
        if split in manifest["splits"]
        for r in pq.read_table(f"{layout.version}/{split}/index.parquet").to_pylist()
    ]
    (reject,) = rejects
    (kept,) = [r for r in index if r["sample_id"] == reject["duplicate_of"]]
    assert reject["reason"] == "duplicate:exact" and {reject["source"], kept["source"]} == {"coco", "flickr"}
    # the union of both sources' texts; the caption both gave (up to case and spacing) once
    assert sorted(t["text"].lower() for t in kept["texts"]) == [
        "a cup of coffee on a table",
        "a saucer and a spoon",
        "coffee in a white cup",
    ]
    assert {t["source"] for t in kept["texts"]} == {"coco", "flickr"}
    assert manifest["samples"] == 2 and manifest["texts_dropped"] == 1  # "coffee in a white cup", said twice
    assert len([m for m in version_members(layout) if m.endswith(".jpg")]) == 2
