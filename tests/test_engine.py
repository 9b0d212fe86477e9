"""The engine's contract: counts reconcile per stage, committed shards are skipped, half-written ones
redone, media is written once, and memory is bounded by the batch, not the shard."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tasks.build import engine
from tasks.core import storage
from tasks.stages.stage import Reject, RowStage

from .helpers import image_bytes, sample, table

INGEST = [("collect", {}), ("clean", {})]


def shard(tmp_path, n=5):
    """A plan shard: items that reference their media files (no bytes yet)."""
    rows = []
    for i in range(n):
        media = image_bytes(seed=i)
        path = tmp_path / "media" / f"{i}.jpg"
        storage.write_bytes(str(path), media)
        rows.append(
            {
                **sample(text=f"caption number {i}", n=i, width=80, height=60),
                "source_uri": str(path),
                "media_size": len(media),
            }
        )
    uri = str(tmp_path / "in" / "shard-00000.parquet")
    storage.write_parquet(uri, table(*rows))
    return uri


def test_a_fused_step_counts_every_stage_and_writes_media_once(tmp_path):
    in_uri = shard(tmp_path)
    result = engine.run_step(
        "collect-clean-filter",
        INGEST + [("filter", {"min_caption_words": 3})],
        in_uri,
        str(tmp_path / "out"),
        batch_items=2,
        writes_media=True,
    )
    assert [(c.stage, c.n_in, c.n_kept, c.n_rejected) for c in result.stages] == [
        ("collect", 5, 5, 0),
        ("clean", 5, 5, 0),
        ("filter", 5, 5, 0),
    ]
    kept = storage.read_parquet(result.uri)
    assert kept.column("media_bytes").null_count == 5  # work shards hold metadata only
    media = storage.read_parquet(result.media_uri)
    assert media.column("sample_id").to_pylist() == kept.column("sample_id").to_pylist()
    assert [len(b) for b in media.column("media_bytes").to_pylist()] == kept.column("media_size").to_pylist()
    assert pq.ParquetFile(result.media_uri).metadata.num_row_groups == 3  # streamed, one batch at a time

    strict = engine.run_step(
        "collect-clean-filter",
        INGEST + [("filter", {"min_caption_words": 4})],
        in_uri,
        str(tmp_path / "strict"),
        writes_media=True,
    )
    assert (strict.stages[2].n_rejected, strict.stages[2].reasons) == (5, {"filter:caption_too_short": 5})
    assert storage.read_parquet(strict.rejects_uri).num_rows == 5
    assert storage.read_json(str(tmp_path / "strict" / "shard-00000.json"))["stages"][2]["n_rejected"] == 5


def test_committed_shard_is_skipped_and_uncommitted_one_is_redone(tmp_path):
    in_uri = shard(tmp_path)
    out = str(tmp_path / "clean")
    first = engine.run_step("collect-clean", INGEST, in_uri, out, writes_media=True)
    kept_bytes = storage.read_bytes(first.uri)
    # committed: a rerun does not touch the output
    storage.write_bytes(first.uri, b"sentinel")
    assert engine.run_step("collect-clean", INGEST, in_uri, out, writes_media=True) == first
    assert storage.read_bytes(first.uri) == b"sentinel"
    # a crash before the marker: the half-written output is replaced by a full one
    storage.remove(str(tmp_path / "clean" / "shard-00000.json"))
    again = engine.run_step("collect-clean", INGEST, in_uri, out, writes_media=True)
    assert again == first and storage.read_bytes(first.uri) == kept_bytes


class LosesRows(RowStage):
    name = "loses_rows"

    def process(self, batch):
        kept, rejected, dropped = super().process(batch)
        return kept.slice(1), rejected, dropped

    def check(self, row):
        return row


class InventsReason(RowStage):
    name = "invents"

    def check(self, row):
        return Reject("odd")


def test_a_stage_that_loses_rows_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "stage_class", lambda name: {"loses_rows": LosesRows, "invents": InventsReason}[name])
    engine._stage_for_process.cache_clear()
    in_uri = shard(tmp_path)
    with pytest.raises(engine.CountMismatch, match="in=5 but kept=4"):
        engine.run_step("x", [("loses_rows", {})], in_uri, str(tmp_path / "out"))
    assert not storage.exists(str(tmp_path / "out" / "shard-00000.json"))  # nothing committed
    result = engine.run_step("x", [("invents", {})], in_uri, str(tmp_path / "out2"))
    assert result.stages[0].reasons == {"invents:odd": 5}
    engine._stage_for_process.cache_clear()


def test_setup_runs_once_per_process_and_config():
    engine._stage_for_process.cache_clear()
    a = engine.load_stage("filter", {"min_caption_words": 1})
    assert engine.load_stage("filter", {"min_caption_words": 1}) is a
    assert engine.load_stage("filter", {"min_caption_words": 2}) is not a


def test_stages_import_neither_prefect_nor_ray():
    code = (
        "import sys, tasks.build.engine, tasks.stages.collect, tasks.publish.commit, tasks.demo.corpus;"
        "import tasks.build.registry;"
        "[tasks.build.registry.stage_class(n) for n in ('collect','clean','dedupe','filter','align','split')];"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'ray', 'prefect_ray'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


PEAK_RSS = """
import json, sys
from tasks.build import engine


def status_kb(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])


stages = [("collect", {}), ("clean", {})]
[engine.load_stage(*stage) for stage in stages]  # imports and models (PyAV, Pillow, py3langid) are not the data's
# the peak from here on: getrusage's ru_maxrss would carry the forking parent's (pytest's) high-water mark
open("/proc/self/clear_refs", "w").write("5")
before = status_kb("VmRSS")
engine.run_step("collect-clean", stages, sys.argv[1], sys.argv[2],
                batch_bytes=int(sys.argv[3]), writes_media=True)
print(json.dumps({"growth_kb": status_kb("VmHWM") - before}))
"""


@pytest.mark.e2e  # worker processes, ~30 s
def test_a_workers_memory_is_bounded_by_the_batch_not_the_shard(tmp_path):
    """17 MB recordings streamed in 20 MB batches: a worker's peak memory is the same for a shard of
    8 (130 MB) or 24 (390 MB) of them: ~155 MB over the set-up stages here, of which py3langid's model
    (~50 MB, loaded by the first caption) and the codecs' first use are paid once per process. It was
    ~320 MB while the media writer built a dictionary and min/max statistics of every recording and
    glibc kept freed recordings in the heap (tasks/core/memory.py). Held as one batch, the 8 cost ~3x that."""
    import json

    from .helpers import noise_flac

    def shard_of(n: int) -> tuple[str, int]:
        rows = []
        for i in range(n):
            media = noise_flac(90, seed=i)
            path = tmp_path / "media" / f"{i}.flac"
            storage.write_bytes(str(path), media)
            rows.append({**sample("audio", text=f"noise {i}", n=i), "source_uri": str(path), "media_size": len(media)})
        uri = str(tmp_path / f"in-{n}" / "shard-00000.parquet")
        storage.write_parquet(uri, table(*rows))
        return uri, sum(r["media_size"] for r in rows)

    def growth_mb(in_uri: str, batch_bytes: int, out: str) -> float:
        result = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, in_uri, str(tmp_path / out), str(batch_bytes)],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(result.stdout.splitlines()[-1])["growth_kb"] / 1024

    (small, _), (large, _) = shard_of(8), shard_of(24)
    streamed_small, streamed_large = growth_mb(small, 20 * 2**20, "s8"), growth_mb(large, 20 * 2**20, "s24")
    whole_small = growth_mb(small, 2**30, "w8")
    assert streamed_large < 1.25 * streamed_small + 16, (streamed_small, streamed_large)
    assert streamed_large < 10 * 20, streamed_large  # 10 batches' bytes: the copies of one media are bounded
    assert whole_small > 2 * streamed_small, (streamed_small, whole_small)
    media = storage.read_parquet(str(tmp_path / "s24" / "shard-00000.media.parquet"))
    assert pq.ParquetFile(str(tmp_path / "s24" / "shard-00000.media.parquet")).metadata.num_row_groups == 24
    assert media.num_rows == 24


def test_a_batch_is_read_ahead_only_while_two_batches_fit_the_byte_bound(tmp_path, monkeypatch):
    """Long recordings (known sizes near the bound) are not read a batch ahead: that would hold a second
    batch of media. Small files and downloads (size unknown until fetched) still are."""

    class Watching(RowStage):
        name = "watching"
        shown: list[list[str]] = []

        def prefetch(self, batch):
            Watching.shown.append(batch.column("sample_id").to_pylist())

        def check(self, row):
            return row

    monkeypatch.setattr(engine, "stage_class", lambda name: Watching)

    def run(sizes: list[int | None], out: str) -> list[list[str]]:
        rows = [{**sample(n=i), "media_size": size} for i, size in enumerate(sizes)]
        uri = str(tmp_path / out / "in" / "shard-00000.parquet")
        storage.write_parquet(uri, table(*rows))
        Watching.shown = []
        engine.run_step("s", [("watching", {})], uri, str(tmp_path / out), batch_items=2, batch_bytes=20 * 2**20)
        return Watching.shown

    ids = [sample(n=i)["sample_id"] for i in range(6)]
    assert run([12 * 2**20] * 3, "long") == [ids[:1]]  # batches of one; two would pass 20 MB: only the first
    assert run([2**20] * 6, "small") == [ids[0:2], ids[2:4], ids[4:6]]  # each batch shown before its turn
    assert run([None] * 6, "urls") == [ids[0:2], ids[2:4], ids[4:6]]
