"""Publishing: staged tars, a claim taken once, a manifest last; a version is never touched again."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pyarrow as pa
import pytest

from tasks.core import storage
from tasks.core.schema import MEDIA_SCHEMA
from tasks.publish import commit as publish
from tasks.publish.commit import VersionExists
from tasks.publish.tars import PublishConfig, plan_tars, write_tar
from tasks.recipe import Recipe

from .helpers import image_bytes, sample, table

FUNNEL = [{"stage": "split", "in": 6, "kept": 6, "rejected": 0, "reasons": {}}]


def split_shard(root: str, name: str, caption: str) -> tuple[str, str]:
    """A shard of items that reached the split (metadata), and its media file as clean wrote it."""
    rows = [
        sample(
            captions=(f"{caption} {i}", f"another caption {i}"),
            media=image_bytes(seed=i),
            media_ext="jpg",
            n=i,
            split=("train", "train", "val", "test", "train", "train")[i],
        )
        for i in range(6)
    ]
    items = table(*rows)
    uri = storage.join(root, "in", f"{name}.parquet")
    media_uri = storage.join(root, "in", f"{name}.media.parquet")
    storage.write_parquet(media_uri, items.select(MEDIA_SCHEMA.names).cast(MEDIA_SCHEMA))
    storage.write_parquet(
        uri,
        items.set_column(items.schema.get_field_index("media_bytes"), "media_bytes", pa.nulls(6, pa.large_binary())),
    )
    return uri, media_uri


RECIPE = Recipe(name="ds", source={"name": "web", "kind": "manifest", "uri": "captions.jsonl"})


def build(root: str, build_key: str, caption: str):
    """One shard's items staged as tars: (layout, what commit_version takes)."""
    layout = storage.Layout(root, "ds", "2026-01-01", build_key)
    sources = [split_shard(storage.join(root, build_key), "shard-00000", caption)]
    plan = plan_tars(sources, PublishConfig(), layout.step_dir("tars"))
    return layout, [write_tar(t, plan.dir, sources, layout.step_dir("publish")) for t in plan.tars]


def commit_version(layout, staged, reject_uris, funnel, recipe=RECIPE):
    built = publish.Built(staged, reject_uris, [], funnel, tar_members={"image": ["jpg"]})
    return publish.commit_version(layout, recipe.recorded(), built)


def test_each_item_is_one_media_member_with_all_its_texts(tmp_path):
    layout, staged = build(str(tmp_path), "aaa", "a picture")
    manifest = commit_version(layout, staged, [], FUNNEL)
    with tarfile.open(str(tmp_path / "ds/versions/2026-01-01/train/image-000000.tar")) as tar:
        names = tar.getnames()
        first = json.loads(tar.extractfile(names[1]).read())
        caption = tar.extractfile(names[2]).read().decode()
    assert len(names) == 3 * 4 and [n.rsplit(".", 1)[1] for n in names[:3]] == ["jpg", "json", "txt"]
    assert [t["text"] for t in first["texts"]] == ["a picture 0", "another caption 0"] and caption == "a picture 0"
    assert manifest["texts"] == 12 and manifest["splits"]["train"]["texts"] == 8


def test_version_files_match_the_manifest(tmp_path):
    layout, staged = build(str(tmp_path), "aaa", "a picture")
    manifest = commit_version(layout, staged, [], FUNNEL)
    on_disk = {n for n in storage.list_files(layout.version) if n not in ("manifest.json", "_claim.json")}
    assert "dropped_texts.parquet" in on_disk
    assert on_disk == set(manifest["files"])
    for name, entry in manifest["files"].items():
        data = storage.read_bytes(storage.join(layout.version, name))
        assert {k: entry[k] for k in ("bytes", "sha256")} == {
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if name.endswith(".tar"):  # and each tar its item count
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                assert entry["items"] == sum(n.endswith(".json") for n in tar.getnames())
    assert manifest["splits"]["train"]["tars"] == ["train/image-000000.tar"]
    assert {s: v["samples"] for s, v in manifest["splits"].items()} == {"train": 4, "val": 1, "test": 1}


def test_a_second_build_never_touches_a_claimed_version(tmp_path):
    """Two builds of one partition with different recipes, both past the flow's first check."""
    root = str(tmp_path)
    first, first_staged = build(root, "aaa", "a picture")
    second, second_staged = build(root, "bbb", "another caption")
    manifest = commit_version(first, first_staged, [], FUNNEL)
    before = {n: storage.read_bytes(storage.join(first.version, n)) for n in storage.list_files(first.version)}
    with pytest.raises(VersionExists, match="already published by build aaa"):
        commit_version(second, second_staged, [], FUNNEL)
    # even when the second build lost the race between the manifest check and the claim
    storage.remove(first.version_manifest)
    with pytest.raises(VersionExists, match="is being published by build aaa"):
        commit_version(second, second_staged, [], FUNNEL)
    storage.write_bytes(first.version_manifest, before["manifest.json"])
    after = {n: storage.read_bytes(storage.join(first.version, n)) for n in storage.list_files(first.version)}
    assert after == before and json.loads(after["manifest.json"]) == manifest


def test_commit_resumes_after_a_crash_between_moves(tmp_path, monkeypatch):
    layout, staged = build(str(tmp_path), "aaa", "a picture")
    reference_root = str(tmp_path / "reference")
    ref_layout, ref_staged = build(reference_root, "aaa", "a picture")
    reference = commit_version(ref_layout, ref_staged, [], FUNNEL)

    real_move, moves = storage.move, []

    def crash_on_second_move(src, dst):
        if len(moves) == 1:
            raise KeyboardInterrupt("killed")
        moves.append(dst)
        real_move(src, dst)

    monkeypatch.setattr(storage, "move", crash_on_second_move)
    with pytest.raises(KeyboardInterrupt):
        commit_version(layout, staged, [], FUNNEL)
    assert not storage.exists(layout.version_manifest)
    monkeypatch.setattr(storage, "move", real_move)
    manifest = commit_version(layout, staged, [], FUNNEL)
    drop = ("created_at",)
    assert {k: v for k, v in manifest.items() if k not in drop} == {k: v for k, v in reference.items() if k not in drop}


def test_commit_refuses_a_funnel_that_does_not_reconcile(tmp_path):
    layout, staged = build(str(tmp_path), "aaa", "a picture")
    bad = [{"stage": "clean", "in": 10, "kept": 6, "rejected": 3, "reasons": {}}]
    with pytest.raises(RuntimeError, match="in=10 != kept=6 \\+ rejected=3"):
        commit_version(layout, staged, [], bad)
    assert not storage.exists(layout.version_claim)


def test_an_abandoned_builds_files_block_a_new_claim(tmp_path):
    root = str(tmp_path)
    first, first_staged = build(root, "aaa", "a picture")
    second, second_staged = build(root, "bbb", "another caption")
    storage.write_bytes(storage.join(first.version, "train/image-000001.tar"), b"left by a crashed build")
    with pytest.raises(VersionExists, match="delete the whole folder"):
        commit_version(second, second_staged, [], FUNNEL)
    assert not storage.exists(second.version_claim)
