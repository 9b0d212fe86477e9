"""Splits: stratified per modality and source, and a group never changes split once published."""

from __future__ import annotations

import io
import json
import random
from collections import Counter, defaultdict

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.core import storage
from tasks.core.schema import SPLITS
from tasks.publish.leakage import Leakage
from tasks.recipe import Recipe
from tasks.sources import make_source
from tasks.stages.split import SplitConfig, assign_splits, shares_by_stratum

from .helpers import build_in_process, sample, write_shards

WORDS = "red blue green small large old new bright dark quiet loud round flat tall short warm cold soft".split()


def mixed_rows(n: int, seed: int = 5) -> list[dict]:
    """Items of six strata of very different sizes, in groups of one to three items."""
    rng = random.Random(seed)
    strata = [("image", "coco", 0.4), ("image", "cc3m", 0.2), ("audio", "clotho", 0.15),
              ("audio", "voxceleb", 0.1), ("video", "msrvtt", 0.08), ("video", "webvid", 0.07)]  # fmt: skip
    rows = []
    for modality, source, share in strata:
        count, g = round(n * share), 0
        while count > 0:
            size = min(count, rng.choice((1, 1, 2, 3)))
            for _ in range(size):
                rows.append(sample(text=f"{source} {len(rows)}", group=f"{source}-{g}", n=len(rows), source=source,
                                   modality=modality))  # fmt: skip
            count -= size
            g += 1
    return rows


def test_every_stratum_of_a_2000_item_mix_is_within_2_points_of_8_1_1(tmp_path):
    rows = mixed_rows(2000)
    out = assign_splits(write_shards(tmp_path, rows, 4), SplitConfig(), str(tmp_path / "a.parquet"))
    table = pq.read_table(out.uri)
    split_of = dict(zip(table.column("group_id").to_pylist(), table.column("split").to_pylist()))
    counts: dict[tuple, Counter] = defaultdict(Counter)
    for r in rows:
        counts[(r["modality"], r["source"])][split_of[r["group_id"]]] += 1
    assert len(counts) == 6
    for stratum, c in counts.items():
        total = sum(c.values())
        assert total >= 140
        for split, target in zip(SPLITS, (0.8, 0.1, 0.1)):
            assert abs(c[split] / total - target) <= 0.02, (stratum, dict(c))
    by_modality = {(r["modality"], split_of[r["group_id"]]) for r in rows}
    assert by_modality == {(m, s) for m in ("image", "audio", "video") for s in SPLITS}


def test_without_stratifying_a_small_modality_can_miss_a_split(tmp_path):
    """What stratifying is for: the same items dealt out as one stratum leave some stratum off target."""
    rows = mixed_rows(2000)
    out = assign_splits(write_shards(tmp_path, rows, 1), SplitConfig(stratify=()), str(tmp_path / "a.parquet"))
    table = pq.read_table(out.uri)
    split_of = dict(zip(table.column("group_id").to_pylist(), table.column("split").to_pylist()))
    worst = 0.0
    for source in {r["source"] for r in rows}:
        items = [split_of[r["group_id"]] for r in rows if r["source"] == source]
        worst = max(worst, max(abs(items.count(s) / len(items) - t) for s, t in zip(SPLITS, (0.8, 0.1, 0.1))))
    assert worst > 0.02


def test_a_stratum_of_ten_groups_has_one_in_every_split(tmp_path):
    # ten groups of which one is big: dealing by items alone would leave val or test empty
    rows = [sample(text=f"c {i}", group="big", n=i) for i in range(30)]
    rows += [sample(text=f"c {i}", group=f"g{i}", n=i) for i in range(30, 39)]
    out = assign_splits(write_shards(tmp_path, rows, 1), SplitConfig(), str(tmp_path / "a.parquet"))
    assert set(pq.read_table(out.uri).column("split").to_pylist()) == set(SPLITS)


def test_returning_groups_keep_the_published_split_and_new_ones_fill_the_shares(tmp_path):
    rows = [sample(text=f"c {i}", group=f"g{i % 300}", n=i) for i in range(600)]
    published = {f"g{i}": "test" for i in range(20)}  # more test than the shares want
    out = assign_splits(write_shards(tmp_path, rows, 2), SplitConfig(), str(tmp_path / "a.parquet"), published)
    table = pq.read_table(out.uri).to_pylist()
    split_of = {r["group_id"]: r["split"] for r in table}
    assert all(split_of[g] == "test" for g in published) and out.returning == 20
    shares = Counter(split_of[r["group_id"]] for r in rows)
    assert abs(shares["test"] / 600 - 0.1) <= 2 / 600  # new groups went elsewhere until test is back at 10 %
    assert abs(shares["train"] / 600 - 0.8) <= 2 / 600


def noise_jpeg(rng: np.random.Generator) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def write_partition(root, partition: str, groups: range, rng: np.random.Generator, words: random.Random) -> None:
    """A drop of new pictures (never seen before) of the groups `groups` (a speaker, a channel...)."""
    folder = root / partition
    rows = []
    for g in groups:
        for k in range(1 + g % 2):
            name = f"{g}-{k}.jpg"
            storage.write_bytes(str(folder / name), noise_jpeg(rng))
            rows.append({"media": name, "modality": "image", "text": " ".join(words.sample(WORDS, 7)), "group": g})
    storage.write_bytes(str(folder / "captions.jsonl"), "\n".join(json.dumps(r) for r in rows).encode())


def splits_of(layout) -> dict[str, str]:
    found = {}
    for split in SPLITS:
        uri = storage.join(layout.version, split, "index.parquet")
        if storage.exists(uri):
            for row in pq.read_table(uri, columns=["group_id", "split"]).to_pylist():
                found[row["group_id"]] = row["split"]
    return found


def test_a_group_keeps_its_split_in_later_partitions_and_in_a_backfill_built_out_of_order(tmp_path):
    rng, words = np.random.default_rng(0), random.Random(0)
    drops = {"2026-01-01": range(0, 120), "2026-01-03": range(60, 180), "2026-01-02": range(30, 150)}
    for partition, groups in drops.items():
        write_partition(tmp_path / "drops", partition, groups, rng, words)
    source = make_source(name="cams", kind="manifest", uri=str(tmp_path / "drops" / "{partition}" / "captions.jsonl"))
    recipe = Recipe(name="t", sources=(source,))
    seen: dict[str, str] = {}
    for partition in drops:  # the 2nd of January last: a backfill after the 3rd was published
        layout, manifest = build_in_process([source], str(tmp_path / "out"), recipe, partition=partition)
        splits = splits_of(layout)
        assert manifest["samples"] == sum(1 + g % 2 for g in drops[partition])
        returning = {g: s for g, s in splits.items() if g in seen}
        assert len(returning) >= (60 if seen else 0)
        assert returning == {g: seen[g] for g in returning}  # not one moved
        seen.update(splits)
    assert storage.read_bytes(str(tmp_path / "out" / "t" / "latest")).decode().strip() == "versions/2026-01-03"


def test_the_guard_fails_a_build_whose_test_item_copies_a_published_train_item(tmp_path):
    """With dedupe against published versions turned off, a copy of a train picture published again in
    another group lands in another split: the guard stops the commit and names the pair."""
    rng, words = np.random.default_rng(1), random.Random(1)
    write_partition(tmp_path / "drops", "2026-01-01", range(0, 40), rng, words)
    first = tmp_path / "drops" / "2026-01-01"
    second = tmp_path / "drops" / "2026-01-02"
    rows = []
    for g in range(100, 140):  # new groups, each with a copy of a picture the first drop published
        name = f"{g}.jpg"
        storage.write_bytes(str(second / name), (first / f"{g - 100}-0.jpg").read_bytes())
        rows.append({"media": name, "modality": "image", "text": " ".join(words.sample(WORDS, 7)), "group": g})
    storage.write_bytes(str(second / "captions.jsonl"), "\n".join(json.dumps(r) for r in rows).encode())
    source = make_source(name="cams", kind="manifest", uri=str(tmp_path / "drops" / "{partition}" / "captions.jsonl"))
    recipe = Recipe(name="t", sources=(source,), dedupe={"against_published": False})
    build_in_process([source], str(tmp_path / "out"), recipe, partition="2026-01-01")
    with pytest.raises(Leakage, match=r"val/test items are copies of train items: .*same media bytes.*on_leak: move"):
        build_in_process([source], str(tmp_path / "out"), recipe, partition="2026-01-02")
    assert not storage.exists(str(tmp_path / "out" / "t" / "versions" / "2026-01-02" / "manifest.json"))

    # told to move, the guard puts each new group into the split of the published picture it copies
    moving = Recipe(name="t", sources=(source,), dedupe={"against_published": False}, split={"on_leak": "move"})
    layout, manifest = build_in_process([source], str(tmp_path / "out"), moving, partition="2026-01-02")
    first_split = {
        r["sha256"]: r["split"]
        for s in ("train", "val", "test")
        for r in pq.read_table(tmp_path / "out" / "t" / "versions" / "2026-01-01" / s / "index.parquet").to_pylist()
    }
    second = [r for s in manifest["splits"] for r in pq.read_table(f"{layout.version}/{s}/index.parquet").to_pylist()]
    assert len(second) == 40 and all(r["split"] == first_split[r["sha256"]] for r in second)
    guard = storage.read_json(f"{layout.version}/stats.json")["dedupe"]["leak_guard"]
    assert guard["moved_groups"] == len(guard["moved"]) >= guard["leaks"] > 0  # val/test copies move too


def test_a_stratum_that_returning_groups_hold_off_target_is_flagged(tmp_path):
    rows = [sample(text=f"c {i}", group=f"g{i}", n=i) for i in range(200)]
    published = {f"g{i}": "test" for i in range(60)}  # 30 % of the stratum was published as test
    out = assign_splits(write_shards(tmp_path, rows, 1), SplitConfig(), str(tmp_path / "a.parquet"), published)
    split_of = dict(zip(*pq.read_table(out.uri, columns=["group_id", "split"]).to_pydict().values()))
    rows = [{**r, "split": split_of[r["group_id"]]} for r in rows]
    report = shares_by_stratum(rows, SplitConfig())
    assert report["image/t"]["flagged"] and report["image/t"]["shares"]["test"] == 0.3
    assert not shares_by_stratum(rows[:99], SplitConfig())["image/t"]["flagged"]  # too few items to judge


def test_a_group_another_build_published_meanwhile_in_another_split_stops_the_commit(tmp_path, monkeypatch):
    """Two partitions built at once: the second drew its splits before the first committed a group new to
    both. The guard sees the group's published split differ and stops the commit, naming the group."""
    import tasks.stages.split

    rng, words = np.random.default_rng(2), random.Random(2)
    write_partition(tmp_path / "drops", "2026-01-01", range(0, 60), rng, words)
    write_partition(tmp_path / "drops", "2026-01-02", range(20, 100), rng, words)
    source = make_source(name="cams", kind="manifest", uri=str(tmp_path / "drops" / "{partition}" / "captions.jsonl"))
    recipe = Recipe(name="t", sources=(source,))
    build_in_process([source], str(tmp_path / "out"), recipe, partition="2026-01-01")
    real = tasks.stages.split.assign_splits
    monkeypatch.setattr(
        tasks.stages.split, "assign_splits", lambda uris, config, out, published=None: real(uris, config, out)
    )
    with pytest.raises(Leakage, match=r"groups would be published in another split than a version already gave"):
        build_in_process([source], str(tmp_path / "out"), recipe, partition="2026-01-02")


def test_a_new_group_merged_into_a_published_one_takes_its_name_and_split(tmp_path):
    """Copies join their groups (dedupe): when one of them is a published group, the union keeps that
    group's name, so its split holds, whatever the names sort like."""
    rng, words = np.random.default_rng(3), random.Random(3)
    drops = tmp_path / "drops"
    rows = {"2026-01-01": [], "2026-01-02": []}
    for i in range(40):
        storage.write_bytes(str(drops / "2026-01-01" / f"old{i}.jpg"), noise_jpeg(rng))
        rows["2026-01-01"].append({"media": f"old{i}.jpg", "text": " ".join(words.sample(WORDS, 7)), "group": f"z{i}"})
        picture = noise_jpeg(rng)
        copy = io.BytesIO()
        Image.open(io.BytesIO(picture)).save(copy, format="JPEG", quality=60)  # a re-encode: other bytes
        storage.write_bytes(str(drops / "2026-01-02" / f"new{i}.jpg"), picture)
        storage.write_bytes(str(drops / "2026-01-02" / f"copy{i}.jpg"), copy.getvalue())
        rows["2026-01-02"] += [
            {"media": f"new{i}.jpg", "text": " ".join(words.sample(WORDS, 7)), "group": f"z{i}"},
            {"media": f"copy{i}.jpg", "text": " ".join(words.sample(WORDS, 7)), "group": f"a{i}"},
        ]
    for partition, lines in rows.items():
        lines = [{**r, "modality": "image"} for r in lines]
        storage.write_bytes(str(drops / partition / "captions.jsonl"), "\n".join(json.dumps(r) for r in lines).encode())
    source = make_source(name="cams", kind="manifest", uri=str(drops / "{partition}" / "captions.jsonl"))
    recipe = Recipe(name="t", sources=(source,))
    first, _ = build_in_process([source], str(tmp_path / "out"), recipe, partition="2026-01-01")
    second, manifest = build_in_process([source], str(tmp_path / "out"), recipe, partition="2026-01-02")
    assert manifest["samples"] == 40 and manifest["rejected"] == 40  # each copy merged into its original
    published, merged = splits_of(first), splits_of(second)
    assert set(merged) == {f"cams:z{i}" for i in range(40)}
    assert merged == {g: published[g] for g in merged}


@pytest.mark.parametrize("drop", [False, True])
def test_a_caption_a_version_published_is_found_in_the_next_partition(tmp_path, drop):
    """Another picture under a near-identical caption: it joins the published item's group (so its split),
    or, from a source whose caption copies are dropped, is a reject naming the published item."""
    rng, words = np.random.default_rng(4), random.Random(4)
    caption = "a red bicycle leaning against a brick wall in the rain at night"
    for partition, text, group in (("2026-01-01", caption, "first"), ("2026-01-02", caption + "!", "second")):
        write_partition(tmp_path / "drops", partition, range(0, 30), rng, words)
        folder = tmp_path / "drops" / partition
        storage.write_bytes(str(folder / "bike.jpg"), noise_jpeg(rng))
        lines = (folder / "captions.jsonl").read_text().splitlines()
        lines.append(json.dumps({"media": "bike.jpg", "modality": "image", "text": text, "group": group}))
        (folder / "captions.jsonl").write_text("\n".join(lines))
    source = make_source(name="cams", kind="manifest", uri=str(tmp_path / "drops" / "{partition}" / "captions.jsonl"))
    recipe = Recipe(name="t", sources=(source,), dedupe={"captions": {"drop": ["cams"] if drop else []}})
    first, _ = build_in_process([source], str(tmp_path / "out"), recipe, partition="2026-01-01")
    second, manifest = build_in_process([source], str(tmp_path / "out"), recipe, partition="2026-01-02")
    index = duckdb.sql(f"SELECT group_id, split, texts[1].text AS text FROM '{second.version}/*/index.parquet'")
    rows = {r[2]: r[:2] for r in index.fetchall()}
    stats = storage.read_json(storage.join(second.version, "stats.json"))
    if drop:
        assert caption + "!" not in rows
        rejects = duckdb.sql(f"SELECT reason, detail FROM '{second.version}/rejects.parquet'").fetchall()
        assert [r for r in rejects if r[0] == "duplicate:caption"] == [
            ("duplicate:caption", rejects[0][1])
        ] and "published in partition 2026-01-01" in rejects[0][1]
    else:
        assert rows[caption + "!"] == ("cams:first", splits_of(first)["cams:first"])
        assert stats["dedupe"]["caption_duplicates"] == {"cams": 1}


def test_each_shard_reads_only_its_own_groups_splits(tmp_path):
    """At 10M groups the whole assignment is ~1.5 GB of dict per worker: the decision also writes, per
    shard, the splits of the groups in it, and the split stage of that shard reads only those."""
    from tasks.stages.split import SplitStage, parts_folder

    rows = mixed_rows(600)
    shards = write_shards(tmp_path, rows, 3)
    out = assign_splits(shards, SplitConfig(), str(tmp_path / "a.parquet"))
    whole = dict(zip(*pq.read_table(out.uri, columns=["group_id", "split"]).to_pydict().values()))
    for i, uri in enumerate(shards):
        part = pq.read_table(f"{parts_folder(out.uri)}/shard-{i:05d}.parquet").to_pydict()
        assert sorted(part["group_id"]) == sorted({r["group_id"] for r in rows[i::3]})
        assert all(whole[g] == s for g, s in zip(part["group_id"], part["split"]))
        stage = SplitStage(assignment_uri=out.uri)
        stage.setup()
        stage.start_shard(f"shard-{i:05d}")
        assert stage.assignment == dict(zip(part["group_id"], part["split"]))
        kept, _, _ = stage.process(storage.read_parquet(uri))
        assert [r["split"] for r in kept.to_pylist()] == [whole[r["group_id"]] for r in rows[i::3]]
