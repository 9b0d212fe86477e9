"""The demo recipe end to end: the real Prefect flow on a real Ray cluster, to a local folder and to S3."""

from __future__ import annotations

import io
import json

import duckdb
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from tasks.core import storage
from tasks.core.schema import SPLITS
from tasks.demo.corpus import BROKEN_ROWS, DUPLICATES, PLANTED, RENAMED_CAPTION

from .helpers import tree_digest

pytestmark = pytest.mark.e2e  # Prefect servers, Ray clusters, mmetl processes

PARTITION = "2026-11-01"


@pytest.fixture(scope="module")
def builds(tmp_path_factory, demo_recipe, s3, prefect_api, ray_cluster):
    from flows.build import build_dataset

    local_root = str(tmp_path_factory.mktemp("local-store"))
    s3_root = f"{s3}/datasets"
    return {
        "local": build_dataset(demo_recipe, PARTITION, local_root),
        "s3": build_dataset(demo_recipe, PARTITION, s3_root),
    }


def storage_root(version: str) -> str:
    """The storage root a version URI of this module's builds lives under."""
    return version.split(f"/demo/versions/{PARTITION}")[0]


def test_local_and_s3_outputs_are_identical(builds):
    local, remote = builds["local"]["version"], builds["s3"]["version"]
    assert remote.startswith("s3://")
    local_files, remote_files = tree_digest(local), tree_digest(remote)
    assert local_files == remote_files
    assert {
        "train/index.parquet",
        "val/index.parquet",
        "test/index.parquet",
        "stats.json",
        "rejects.parquet",
        "dropped_texts.parquet",
    } <= set(local_files)
    for key in ("splits", "samples", "rejected", "files", "build_key"):
        assert builds["local"]["manifest"][key] == builds["s3"]["manifest"][key]


def test_webdataset_reads_every_split_without_our_code(builds):
    version = builds["local"]["version"]
    manifest = builds["local"]["manifest"]
    for split in SPLITS:
        urls = [f"{version}/{tar}" for tar in manifest["splits"][split]["tars"]]
        samples = list(wds.WebDataset(urls, shardshuffle=False))
        assert len(samples) == manifest["splits"][split]["samples"]
        assert sum(len(json.loads(s["json"])["texts"]) for s in samples) == manifest["splits"][split]["texts"]
        for sample in samples:
            media = [k for k in sample if k in ("jpg", "flac", "mp4")]
            assert len(media) == 1 and sample[media[0]], sample["__key__"]  # one media member per item
            meta = json.loads(sample["json"])
            assert meta["split"] == split and meta["sample_id"] == sample["__key__"]
            assert sample["txt"].decode() == meta["texts"][0]["text"] and meta["texts"][0]["kind"] == "caption"


def test_items_carry_every_caption_of_their_media_once(builds, demo_manifest):
    """Rows naming one file are one item: as many texts as rows, one media member, one index row."""
    version = builds["local"]["version"]
    captions: dict[str, list[str]] = {}
    for line in open(demo_manifest, "rb").read().split(b"\n"):
        try:
            row = json.loads(line)
        except ValueError:  # the planted broken rows
            continue
        if isinstance(row.get("media"), str) and row.get("modality") in ("image", "audio", "video"):
            captions.setdefault(row["media"], []).append(row["text"])
    index = (
        duckdb.connect()
        .execute(f"SELECT source_uri, [t.text FOR t IN texts] FROM read_parquet('{version}/*/index.parquet')")
        .fetchall()
    )
    multi = 0
    for uri, texts in index:
        name = "/".join(uri.rsplit("/", 2)[-2:])
        if not any(name in pair for pair in DUPLICATES):  # a survivor also holds its copy's texts
            assert texts == captions[name], name
            multi += len(texts) == 3
    assert multi > 50  # images with three captions, published once each


def test_webdataset_media_decodes_to_the_recorded_facts(builds):
    from PIL import Image

    version = builds["local"]["version"]
    tars = [t for t in builds["local"]["manifest"]["splits"]["train"]["tars"] if "/image-" in t]
    images = list(wds.WebDataset([f"{version}/{t}" for t in tars], shardshuffle=False))
    assert images and all("jpg" in s for s in images)  # an image tar holds images only
    for sample in images:
        meta = json.loads(sample["json"])
        assert Image.open(io.BytesIO(sample["jpg"])).size == (meta["width"], meta["height"])


def test_parquet_index_split_ratios_and_group_integrity(builds):
    version = builds["local"]["version"]
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT split, count(*) FROM read_parquet('{version}/*/index.parquet') GROUP BY split"
    ).fetchall()
    counts = dict(rows)
    total = sum(counts.values())
    largest_group = con.execute(
        f"SELECT max(n) FROM (SELECT count(*) n FROM read_parquet('{version}/*/index.parquet') GROUP BY group_id)"
    ).fetchone()[0]
    for split, ratio in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(counts[split] - ratio * total) <= largest_group, (split, counts)
    straddling = con.execute(
        f"SELECT group_id FROM read_parquet('{version}/*/index.parquet') GROUP BY group_id"
        " HAVING count(DISTINCT split) > 1"
    ).fetchall()
    assert straddling == []
    index = pq.read_table(f"{version}/train/index.parquet")
    assert "media_bytes" not in index.column_names and {"group_id", "tar", "key", "texts"} <= set(index.column_names)


def test_the_index_loads_in_every_reader_the_readme_promises(builds, tmp_path, monkeypatch):
    """Hugging Face datasets, pandas and DuckDB (with UNNEST into (media, caption) pairs)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub here, and none needed for local files
    import datasets
    import pandas as pd

    version, manifest = builds["local"]["version"], builds["local"]["manifest"]
    train = f"{version}/train/index.parquet"
    hf = datasets.load_dataset("parquet", data_files={"train": train}, split="train", cache_dir=str(tmp_path / "hf"))
    assert hf.num_rows == manifest["splits"]["train"]["samples"]
    assert hf[0]["texts"][0]["kind"] == "caption" and isinstance(hf[0]["scores"], list)
    frame = pd.read_parquet(train)
    assert len(frame) == hf.num_rows and frame["texts"].map(len).sum() == manifest["splits"]["train"]["texts"]
    pairs = (
        duckdb.connect()
        .execute(f"SELECT tar, key, t.text FROM read_parquet('{version}/*/index.parquet'), UNNEST(texts) AS u(t)")
        .fetchall()
    )
    assert len(pairs) == manifest["texts"] and all(text for _, _, text in pairs)


def test_the_readme_loading_snippet_runs_on_a_built_version(builds, tmp_path, monkeypatch):
    """The README's snippet, as printed there, against the demo version (only its path changed)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"Load it without mmetl.*?```python\n(.*?)```", readme, re.S).group(1)
    version, manifest = builds["local"]["version"], builds["local"]["manifest"]
    root = version.split("/versions/")[0]
    code = code.replace('"data/demo"', repr(root))
    assert repr(root) in code
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # local files need no hub
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["version"] == version  # found through `latest`
    image, caption = namespace["image"], namespace["caption"]
    assert image.ndim == 3 and image.shape[0] == 3 and image.dtype.is_floating_point and caption.strip()
    images = namespace["images"]
    assert {s: images[s].num_rows for s in images} == {
        s: manifest["splits"][s]["modalities"]["image"]
        for s in SPLITS
        if "image" in manifest["splits"][s]["modalities"]
    }
    assert len(namespace["captions"]) == manifest["texts"]


def test_planted_problems_are_rejected_with_their_reasons_and_nothing_else_is_lost(builds, demo_manifest):
    version = builds["local"]["version"]
    rejects = pq.read_table(f"{version}/rejects.parquet").to_pylist()
    by_file = {
        r["source_uri"].rsplit("/", 2)[-2] + "/" + r["source_uri"].rsplit("/", 1)[-1]: r
        for r in rejects
        if r["source_uri"] and r["reason"] != "collect:bad_row"
    }
    for name, reason in PLANTED.items():
        assert by_file.get(name, {}).get("reason") == reason, name
    for copy, original in DUPLICATES:  # one of the two goes (the larger sample_id), naming the other
        gone = by_file.get(copy) or by_file.get(original)
        assert gone["reason"] == "duplicate:exact" and not (by_file.get(copy) and by_file.get(original)), copy
    assert sum(r["reason"] == "collect:bad_row" for r in rejects) == BROKEN_ROWS
    assert len(rejects) == len(PLANTED) + len(DUPLICATES) + BROKEN_ROWS

    # every annotation row is a text of a published item, a dropped text, a text of a rejected item or
    # a broken row, once; a duplicate's texts live on in the item it merged into
    lines = [line for line in open(demo_manifest, "rb").read().split(b"\n") if line.strip()]
    dropped = pq.read_table(f"{version}/dropped_texts.parquet").num_rows
    rejected_texts = sum(len(r["texts"] or [None]) for r in rejects if r["reason"] != "duplicate:exact")
    assert builds["local"]["manifest"]["texts"] + dropped + rejected_texts == len(lines)
    ids = duckdb.connect().execute(f"SELECT sample_id FROM read_parquet('{version}/*/index.parquet')").fetchall()
    assert len(ids) == len(set(ids)) == builds["local"]["manifest"]["samples"]
    assert not {i for (i,) in ids} & {r["sample_id"] for r in rejects}
    assert {r["duplicate_of"] for r in rejects if r["reason"] == "duplicate:exact"} <= {i for (i,) in ids}


def test_funnel_reconciles_per_stage(builds):
    stats = json.loads(storage.read_bytes(f"{builds['local']['version']}/stats.json"))
    previous = None
    for step in stats["funnel"]:
        assert step["in"] == step["kept"] + step["rejected"] == step["kept"] + sum(step["reasons"].values())
        if previous:
            assert step["in"] == previous.get("items", previous["kept"])
        previous = step
    assert [s["stage"] for s in stats["funnel"]] == ["plan", "collect", "clean", "dedupe", "filter", "align", "split"]
    assert stats["texts_dropped_by_reason"] == {"text:duplicate": 3}  # the copies' repeated captions


def test_identical_copies_are_one_item_with_both_texts(builds):
    version = builds["local"]["version"]
    rows = (
        duckdb.connect()
        .execute(
            f"SELECT source_uri, [t.text FOR t IN texts] FROM read_parquet('{version}/*/index.parquet')"
            " WHERE source_uri LIKE '%/image/0001.jpg' OR source_uri LIKE '%/renamed_0001.jpg'"
        )
        .fetchall()
    )
    assert len(rows) == 1 and RENAMED_CAPTION in rows[0][1] and len(rows[0][1]) == 3


def test_rerun_changes_nothing(builds, demo_recipe):
    from flows.build import build_dataset

    for name, build in builds.items():
        version = build["version"]
        root = storage_root(version)
        before = data_files(root)
        runs_before = storage.list_files(storage.join(root, "demo", "runs"))
        again = build_dataset(demo_recipe, PARTITION, root)
        assert again["skipped"] and again["manifest"] == build["manifest"], name
        assert data_files(root) == before, name
        # only the rerun's own record is added, saying it found the version published
        (new,) = set(storage.list_files(storage.join(root, "demo", "runs"))) - set(runs_before)
        assert storage.read_json(storage.join(root, "demo", "runs", new))["state"] == "already published"


def data_files(root: str) -> dict[str, str]:
    """Every file under the root but the run records."""
    return {name: digest for name, digest in tree_digest(root, skip=()).items() if not name.startswith("demo/runs/")}


def test_flow_run_publishes_the_funnel_artifact(builds):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    run_id = builds["local"]["manifest"]["prefect_flow_run_id"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["funnel-demo"])))
        mine = [a for a in artifacts if str(a.flow_run_id) == run_id]
        assert len(mine) == 1 and mine[0].type == "table"
        rows = json.loads(mine[0].data) if isinstance(mine[0].data, str) else mine[0].data
        funnel = builds["local"]["funnel"]
        assert [(r["stage"], r["in"], r["kept"], r["rejected"]) for r in rows] == [
            (s["stage"], s["in"], s["kept"], s["rejected"]) for s in funnel
        ]
        assert f"duplicate:exact={len(DUPLICATES)}" in rows[3]["reasons"]
        assert client.read_flow_run(run_id).state.is_completed()


def test_a_published_version_is_never_overwritten_by_another_recipe(builds, demo_recipe, tmp_path):
    from flows.build import build_dataset

    changed = tmp_path / "stricter.yaml"
    changed.write_text(open(demo_recipe).read().replace("min_image_side: 32", "min_image_side: 100"))
    root = storage_root(builds["local"]["version"])
    before = tree_digest(builds["local"]["version"], skip=())
    with pytest.raises(RuntimeError, match="versions are immutable"):
        build_dataset(str(changed), PARTITION, root)
    assert tree_digest(builds["local"]["version"], skip=()) == before


def test_work_folder_is_gone_and_a_lost_manifest_rebuilds_the_same_version(builds, demo_recipe):
    """Published, the work folder (a copy of the media) is removed; what a rerun needs is the manifest.
    A crash after the tars moved in but before manifest.json: the rerun builds the same files again."""
    from flows.build import build_dataset

    version = builds["local"]["version"]
    root = storage_root(version)
    assert storage.list_files(storage.join(root, "demo", "work")) == []
    before = tree_digest(version)
    storage.remove(storage.join(version, "manifest.json"))
    again = build_dataset(demo_recipe, PARTITION, root)
    assert not again["skipped"]
    assert tree_digest(version) == before
    for key in ("splits", "samples", "rejected", "files", "build_key"):
        assert again["manifest"][key] == builds["local"]["manifest"][key]
    assert storage.list_files(storage.join(root, "demo", "work")) == []


def test_shards_ran_on_both_ray_nodes(builds, ray_cluster):
    """Every e2e build runs on a two-node cluster: the shard tasks used both nodes."""
    from ray.util.state import list_nodes, list_tasks

    nodes = {n.node_id for n in list_nodes(address=ray_cluster["dashboard"]) if n.state == "ALIVE"}
    tasks = list_tasks(address=ray_cluster["dashboard"], filters=[("name", "=", "run_step_shard")], limit=10_000)
    assert len(nodes) == 2
    assert {t.node_id for t in tasks} == nodes
