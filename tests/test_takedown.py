"""Takedowns (tasks/publish/takedown.py): listed items leave every published version as a new revision, by
sha256, pHash (a re-encoded copy goes too), URL prefix and id; everything else keeps its bytes; later builds and
backfills never publish them again; a kill at its writes resumes to the same revision."""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import imagehash
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flows.cli import main
from tasks.build.pipeline import build_locally
from tasks.core import storage
from tasks.recipe import Recipe
from tasks.sources import make_source

from .helpers import image_bytes, real_photos

PARTITIONS = ("2026-01-01", "2026-01-02", "2026-01-03")


def _jpeg(picture: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _corpus(folder: Path) -> dict[str, list[str]]:
    """Three nights of pictures: real photographs (one re-encoded smaller on the second night) and generated
    ones; the third night's under `night3/`. Returns each night's file names."""
    photos = real_photos(turns=2)
    names = sorted(photos)
    nights = {p: [] for p in PARTITIONS}
    for i, name in enumerate(names):
        night = PARTITIONS[i % 3]
        path = f"night3/{name}.jpg" if night == PARTITIONS[2] else f"{name}.jpg"
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(photos[name])
        nights[night].append(path)
    coffee = Image.open(io.BytesIO(photos["coffee-0"]))
    (folder / "coffee-small.jpg").write_bytes(_jpeg(coffee.resize((300, 200)), quality=60))
    nights[PARTITIONS[1]].append("coffee-small.jpg")
    for i in range(6):
        (folder / f"gen{i}.jpg").write_bytes(image_bytes(size=(120 + i, 90), seed=i))
        nights[PARTITIONS[i % 3]].append(f"gen{i}.jpg")
    return nights


def _recipe(folder: Path, night: str, files: list[str]) -> Recipe:
    rows = [{"media": f, "modality": "image", "text": f"a picture filed as {f}"} for f in files]
    (folder / f"{night}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(name="pics", kind="manifest", uri=str(folder / f"{night}.jsonl"))
    # pHash dedupe off: the small coffee is its own item (a takedown by pHash must find it)
    return Recipe.model_validate({"name": "pics", "source": source, "dedupe": {"image_radius": None}})


def _index(version: str) -> list[dict]:
    manifest = json.loads(storage.read_bytes(f"{version}/manifest.json"))
    return [r for s in manifest["splits"].values() for r in pq.read_table(f"{version}/{s['index']}").to_pylist()]


def _tar_keys(version: str) -> dict[str, set[str]]:
    manifest = json.loads(storage.read_bytes(f"{version}/manifest.json"))
    found = {}
    for split in manifest["splits"].values():
        for name in split["tars"]:
            with tarfile.open(f"{version}/{name}") as tar:
                found[name] = {m.name.split(".", 1)[0] for m in tar.getmembers()}
    return found


def _digests(version: str) -> dict[str, str]:
    return {n: hashlib.sha256(storage.read_bytes(f"{version}/{n}")).hexdigest() for n in storage.list_files(version)}


@pytest.fixture
def published(tmp_path):
    nights = _corpus(tmp_path)
    root = str(tmp_path / "out")
    versions = {}
    for night in PARTITIONS:
        layout, _ = build_locally(_recipe(tmp_path, night, nights[night]), root, night)
        versions[night] = layout.version
    return tmp_path, root, nights, versions


def _request(tmp_path: Path, versions: dict) -> tuple[Path, dict[str, str]]:
    """A list with an entry of each kind, and the sample id each must remove (by file name)."""
    first = {r["source_uri"].rsplit("/", 1)[-1]: r for r in _index(versions[PARTITIONS[0]])}
    second = {r["source_uri"].rsplit("/", 1)[-1]: r for r in _index(versions[PARTITIONS[1]])}
    by_sha = next(n for n in first if n.startswith("gen"))
    by_id = next(n for n in second if n.startswith("gen"))
    coffee = imagehash.phash(Image.open(io.BytesIO(real_photos()["coffee-0"])))
    listed = tmp_path / "takedown.txt"
    listed.write_text(
        f"# request 2026-02-01\nsha256:{first[by_sha]['sha256']}\nphash:{coffee}\nurl:{tmp_path}/night3/*\n"
        f"id:{second[by_id]['sample_id']}\n"
    )
    return listed, {"sha256": by_sha, "id": by_id}


def test_a_takedown_removes_every_listed_item_from_every_version_and_nothing_else(published):
    tmp_path, root, nights, versions = published
    listed, named = _request(tmp_path, versions)
    before = {p: _digests(v) for p, v in versions.items()}
    items_before = {p: {r["sample_id"]: r for r in _index(v)} for p, v in versions.items()}
    keys_before = {p: _tar_keys(v) for p, v in versions.items()}

    assert (
        main(["takedown", "pics", "--list", str(listed), "--reason", "rights holder", "--storage", root, "--json"]) == 0
    )
    gone = {}  # partition -> sample ids that had to go
    for p, items in items_before.items():
        name = {s: r["source_uri"].rsplit("/", 1)[-1] for s, r in items.items()}
        listed_names = (named["sha256"], named["id"], "coffee-0.jpg", "coffee-small.jpg")
        gone[p] = {s for s, n in name.items() if n in listed_names or "/night3/" in items[s]["source_uri"]}
    assert all(gone.values())  # each partition lost something: every kind of entry found its item
    for p, version in versions.items():
        manifest = storage.read_json(f"{version}/manifest.json")
        assert manifest["revision"] == 1 and manifest["replaces"] == {
            "revision": 0,
            "manifest": "revisions/manifest.r0.json",
        }
        after = {r["sample_id"]: r for r in _index(version)}
        assert set(after) == set(items_before[p]) - gone[p]
        for sample_id, row in after.items():  # the others are as they were, but for their tar's new name
            assert {k: v for k, v in row.items() if k != "tar"} == {
                k: v for k, v in items_before[p][sample_id].items() if k != "tar"
            }
        keys = _tar_keys(version)
        assert set().union(*keys.values()) == set(after)
        untouched = {n for n, k in keys_before[p].items() if not k & gone[p]}
        assert untouched <= set(keys) and all(_digests(version)[n] == before[p][n] for n in untouched)
        assert not any(n.endswith(".tar") and n not in manifest["files"] for n in storage.list_files(version))
        described = ("rejects.parquet", "dropped_texts.parquet", "README.md", "croissant.json", "stats.json")
        text = " ".join(storage.read_bytes(f"{version}/{n}").decode(errors="ignore") for n in described)
        assert not any(s in text for s in gone[p])
    record = pq.read_table(f"{root}/pics/takedowns.parquet").to_pylist()
    assert {r["reason"] for r in record} == {"rights holder"}
    assert {r["sample_id"] for r in record if r["sample_id"]} == set().union(*gone.values())
    index_parts = storage.list_files(f"{root}/pics/dedupe-index/parts")
    assert not any(s in pq.read_table(f"{root}/pics/dedupe-index/parts/{n}").column("sample_id").to_pylist()
                   for n in index_parts for s in set().union(*gone.values()))  # fmt: skip

    # idempotent: again, nothing changes
    again = {p: _digests(v) for p, v in versions.items()}
    assert main(["takedown", "pics", "--list", str(listed), "--reason", "rights holder", "--storage", root]) == 0
    assert {p: _digests(v) for p, v in versions.items()} == again

    # the next night and a backfill, offered every file again (and a new one under the listed prefix), publish
    # none of the removed: each is blocked by its id before anything is read, the new one by the prefix
    (tmp_path / "night3" / "new.jpg").write_bytes(image_bytes(size=(150, 100), seed=99))
    everything = [f for files in nights.values() for f in files] + ["night3/new.jpg"]
    for night in ("2026-01-04", "2025-12-31"):
        layout, _ = build_locally(_recipe(tmp_path, night, everything), root, night)
        published_names = {r["source_uri"].rsplit("/", 1)[-1] for r in _index(layout.version)}
        assert not published_names & {named["sha256"], named["id"], "coffee-0.jpg", "coffee-small.jpg"}
        assert not any(r["source_uri"].startswith(f"{tmp_path}/night3/") for r in _index(layout.version))
        rejects = {
            r["source_uri"].rsplit("/", 1)[-1]: r["reason"]
            for r in pq.read_table(f"{layout.version}/rejects.parquet").to_pylist()
        }
        assert rejects["new.jpg"] == "blocked:url" and rejects[named["id"]] == "blocked:id"
        assert rejects["coffee-small.jpg"] == "blocked:id"


@pytest.mark.slow
def test_a_takedown_killed_at_its_writes_resumes_to_the_same_revision(published):
    tmp_path, root, _, versions = published
    listed, _ = _request(tmp_path, versions)
    whole_root = tmp_path / "whole"
    subprocess.run(["cp", "-r", root, str(whole_root)], check=True)
    done = _killpoint(str(whole_root), listed)
    ops = int(done.stdout.split("ops ")[-1])
    # seeded points through the revisions, and the last four writes (the record, the index, the clean-up)
    points = sorted(set(random.Random(7).sample(range(1, ops - 3), 8)) | set(range(ops - 3, ops + 1)))
    for point in points:
        copy = tmp_path / f"killed-{point}"
        subprocess.run(["cp", "-r", root, str(copy)], check=True)
        assert _killpoint(str(copy), listed, point).returncode == -9
        assert _killpoint(str(copy), listed).returncode == 0
        assert _tree(copy) == _tree(whole_root), point


def _killpoint(root: str, listed: Path, die_at: int | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tests.killpoint", "--takedown", "pics", str(listed), root]
    command += ["--die-at", str(die_at)] if die_at else []
    return subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=300)


def _tree(root: Path) -> dict[str, str]:
    """Every file's digest, the times a takedown writes set aside."""
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = str(path.relative_to(root))
        data = path.read_bytes()
        if path.name == "manifest.json":
            data = json.dumps({k: v for k, v in json.loads(data).items() if k != "revised_at"}, sort_keys=True).encode()
        elif path.name == "takedowns.parquet":
            data = json.dumps(
                [{k: v for k, v in r.items() if k != "at"} for r in pq.read_table(path).to_pylist()]
            ).encode()
        found[name] = hashlib.sha256(data).hexdigest()
    return found
