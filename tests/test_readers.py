"""A published version read by the tools trainers use, none of our code on the reading side: Hugging Face
datasets (one config per modality), webdataset with a two-worker torch DataLoader, DuckDB, mlcroissant.
The demo is built with small tars (`publish.shard_max_bytes: 128KB`; it is 2.6 MB in all) so that every
split and modality spans several."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pytest
import yaml
from PIL import Image

from tasks.core import storage
from tasks.core.schema import SPLITS
from tasks.publish import tars
from tasks.recipe import Recipe, load_recipe

from .helpers import build_in_process

MAX_BYTES = 128_000


def small_tar_recipe(path: str) -> Recipe:
    recipe = load_recipe(path).model_dump()
    recipe["publish"] = {"shard_max_bytes": "128KB"}
    recipe["sources"] = [{**recipe.pop("source"), "license": "cc-by-4.0"}]
    return Recipe.model_validate(recipe)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_recipe):
    recipe = small_tar_recipe(demo_recipe)
    layout, manifest = build_in_process([], str(tmp_path_factory.mktemp("readers")), recipe, partition="2026-11-02")
    index = duckdb.sql(f"SELECT * FROM '{layout.version}/*/index.parquet'").arrow().read_all().to_pylist()
    return {"recipe": recipe, "layout": layout, "version": layout.version, "manifest": manifest, "index": index}


def tar_names(manifest: dict) -> list[str]:
    return [t for s in manifest["splits"].values() for t in s["tars"]]


def test_tars_are_cut_by_size_per_split_and_modality(demo):
    manifest, index = demo["manifest"], demo["index"]
    by_kind: dict[tuple[str, str], list[str]] = {}
    for name in tar_names(manifest):
        split, modality, n = re.fullmatch(r"(train|val|test)/(image|audio|video)-(\d{6})\.tar", name).groups()
        by_kind.setdefault((split, modality), []).append(name)
    assert len(by_kind) >= 8 and sum(len(v) > 2 for v in by_kind.values()) >= 3  # several tars each
    for (split, modality), names in by_kind.items():
        assert names == [tars.tar_name(split, modality, n) for n in range(len(names))]
        sizes = [manifest["files"][name]["bytes"] for name in names]
        assert all(size <= MAX_BYTES for size in sizes)
        assert all(0.5 * MAX_BYTES <= size for size in sizes[:-1]), (split, modality, sizes)
        for name in names:
            with tarfile.open(f"{demo['version']}/{name}") as tar:
                members = tar.getnames()
                metas = [json.loads(tar.extractfile(m).read()) for m in members if m.endswith(".json")]
            assert {m["modality"] for m in metas} == {modality} and {m["split"] for m in metas} == {split}
            assert manifest["files"][name]["items"] == len(metas)
            assert all("." not in m.split(".", 1)[0] and m.split(".", 1)[0] == m.split(".")[0] for m in members)
    counted = Counter((r["split"], r["modality"]) for r in index)
    items = Counter()
    for (split, modality), names in by_kind.items():
        items[(split, modality)] = sum(manifest["files"][n]["items"] for n in names)
    assert items == counted and sum(items.values()) == manifest["samples"]
    assert {r["tar"] for r in index} == set(tar_names(manifest))


def test_a_kill_during_publish_resumes_to_byte_identical_tars(demo, tmp_path, monkeypatch):
    real_add, calls = tars._add, []

    def killed_mid_tar(tar, name, data):
        calls.append(name)
        if len(calls) == 150:  # inside the second tar: the first is staged, this one half written
            raise KeyboardInterrupt("killed")
        real_add(tar, name, data)

    monkeypatch.setattr(tars, "_add", killed_mid_tar)
    with pytest.raises(KeyboardInterrupt):
        build_in_process([], str(tmp_path), demo["recipe"], partition="2026-11-02")
    monkeypatch.setattr(tars, "_add", real_add)
    layout, manifest = build_in_process([], str(tmp_path), demo["recipe"], partition="2026-11-02")
    names = tar_names(demo["manifest"])
    assert tar_names(manifest) == names
    for name in names:
        assert manifest["files"][name] == demo["manifest"]["files"][name]
        assert storage.read_bytes(f"{layout.version}/{name}") == storage.read_bytes(f"{demo['version']}/{name}")


def test_hugging_face_datasets_loads_every_item_of_each_modality_with_its_media(demo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    version, index = demo["version"], demo["index"]
    for modality in sorted({r["modality"] for r in index}):  # the demo has each media modality
        loaded = datasets.load_dataset(version, modality, cache_dir=str(tmp_path / "hf"))
        expected = {s: {r["sample_id"] for r in index if r["modality"] == modality and r["split"] == s} for s in SPLITS}
        assert set(loaded) == {s for s, ids in expected.items() if ids}
        for split, rows in loaded.items():
            assert sorted(rows["__key__"]) == sorted(expected[split])
            for row in rows:
                meta = row["json"]
                assert meta["modality"] == modality and meta["split"] == split and row["txt"]
                media = row[meta["media_ext"]]
                if modality == "image":
                    assert media.size == (meta["width"], meta["height"])
                elif modality == "audio":
                    assert media.metadata.sample_rate == meta["sample_rate"]
                    assert media.get_all_samples().data.shape[-1] > 0.9 * meta["duration_s"] * meta["sample_rate"]
                else:
                    assert (media.metadata.width, media.metadata.height) == (meta["width"], meta["height"])
                    assert media.get_frame_at(0).data.shape[-2:] == (meta["height"], meta["width"])


def test_webdataset_with_a_two_worker_dataloader_decodes_every_member_of_every_tar(demo):
    import torch
    import webdataset as wds

    urls = [f"{demo['version']}/{name}" for name in tar_names(demo["manifest"])]
    dataset = (
        wds.WebDataset(urls, shardshuffle=False, workersplitter=wds.split_by_worker)
        .decode(wds.imagehandler("torchrgb"), frames_decoded)
        .map(decoded_fully)
    )
    # spawned workers: a forked one inherits whatever threads the test process runs (Ray, Prefect)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    seen = Counter()
    for key, members, ok in loader:
        assert ok, (key, members)
        seen[key] += 1
    assert set(seen.values()) == {1} and set(seen) == {r["sample_id"] for r in demo["index"]}


def frames_decoded(key: str, data: bytes) -> int | None:
    """A webdataset handler for sound and video members: the number of frames PyAV decodes from them."""
    import av

    extension = key.rsplit(".", 1)[-1]
    if extension not in ("flac", "mp4", "mkv", "avi", "webm", "mov"):
        return None
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0] if extension == "flac" else container.streams.video[0]
        return sum(1 for _ in container.decode(stream))


def decoded_fully(sample: dict) -> tuple[str, list[str], bool]:
    """(key, members, whether every member came out decoded: pictures as tensors of the recorded size,
    sound and video as frame counts, the JSON parsed, the caption text)."""
    import torch

    meta = sample["json"]
    media = sample[meta["media_ext"]]
    if meta["modality"] == "image":
        ok = isinstance(media, torch.Tensor) and tuple(media.shape) == (3, meta["height"], meta["width"])
    else:
        ok = isinstance(media, int) and media > 0
    members = [k for k in sample if not k.startswith("__")]
    return sample["__key__"], members, ok and isinstance(sample["txt"], str)


def test_duckdb_reads_the_index_and_mlcroissant_validates_and_iterates_it(demo):
    version, manifest = demo["version"], demo["manifest"]
    per_split = dict(duckdb.sql(f"SELECT split, count(*) FROM '{version}/*/index.parquet' GROUP BY split").fetchall())
    assert per_split == {s: v["samples"] for s, v in manifest["splits"].items()}
    validate = [str(Path(sys.executable).parent / "mlcroissant"), "validate", "--jsonld", "croissant.json"]
    done = subprocess.run(validate, cwd=version, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Done" in done.stderr, done.stderr[-2000:]
    import mlcroissant

    records = list(mlcroissant.Dataset(jsonld=f"{version}/croissant.json").records(record_set="index"))
    assert len(records) == manifest["samples"]
    assert {r["index/sample_id"].decode() for r in records} == {r["sample_id"] for r in demo["index"]}
    described = json.loads(Path(version, "croissant.json").read_text())
    tars_described = {d["contentUrl"]: d["sha256"] for d in described["distribution"] if "contentUrl" in d}
    assert tars_described == {n: manifest["files"][n]["sha256"] for n in tar_names(manifest)}


def test_the_card_front_matter_and_plots_match_stats_json(demo):
    version, manifest, index = demo["version"], demo["manifest"], demo["index"]
    card = Path(version, "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "cc-by-4.0" and front["size_categories"] == ["n<1K"]
    assert [c["config_name"] for c in front["configs"]] == ["image", "audio", "video"]
    assert front["configs"][0]["default"] and not any("parquet" in str(c) for c in front["configs"])
    stats = json.loads(Path(version, "stats.json").read_text())

    def plot(name: str) -> dict:
        image = Image.open(Path(version, "plots", f"{name}.png"))
        assert image.format == "PNG" and image.size[0] > 200 and f"plots/{name}.png" in card
        return json.loads(image.text["mmetl:data"])

    bars = plot("items_per_split_source")["groups"]
    assert {s: sum(c.values()) for s, c in bars.items() if c} == {s: v["samples"] for s, v in stats["splits"].items()}
    assert plot("languages")["groups"]["texts"] == stats["text_languages"]
    words = plot("caption_words")["panels"]["words per text"]
    assert sum(words["counts"]) == manifest["texts"]
    durations = plot("durations")["panels"]
    for modality in ("audio", "video"):
        assert sum(durations[f"{modality} duration (s)"]["counts"]) == sum(r["modality"] == modality for r in index)
    sizes = plot("image_sizes")["panels"]
    assert sum(sizes["short side (px)"]["counts"]) == sum(r["modality"] == "image" for r in index)
    images = [r for r in index if r["modality"] == "image"]
    longest = max(max(r["width"], r["height"]) / min(r["width"], r["height"]) for r in images)
    assert sizes["aspect ratio (long / short)"]["edges"][-1] == pytest.approx(longest)
    strata = stats["strata"]
    assert sum(sum(s["items"].values()) for s in strata.values()) == manifest["samples"]
    assert strata["image/demo"]["shares"]["train"] == pytest.approx(
        sum(r["split"] == "train" for r in index if r["modality"] == "image")
        / sum(r["modality"] == "image" for r in index),
        abs=1e-4,
    )
    assert np.isclose(sum(strata["image/demo"]["shares"].values()), 1.0, atol=1e-3)
