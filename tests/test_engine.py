"""The engine's contract: counts reconcile, committed shards are skipped, half-written ones redone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tasks import engine, storage
from tasks.stage import Reject, RowStage

from .helpers import image_bytes, sample, table


def shard(tmp_path, n=5):
    uri = str(tmp_path / "in" / "shard-00000.parquet")
    storage.write_parquet(uri, table(*[sample(text=f"caption number {i}", media=image_bytes(seed=i), n=i,
                                             width=80, height=60)
                                      for i in range(n)]))
    return uri


def test_run_shard_commits_kept_rejects_and_marker(tmp_path):
    in_uri = shard(tmp_path)
    out = str(tmp_path / "filter")
    result = engine.run_shard("filter", {"min_caption_words": 3}, in_uri, out)
    assert (result.n_in, result.n_kept, result.n_rejected) == (5, 5, 0)
    result = engine.run_shard("filter", {"min_caption_words": 4}, in_uri, str(tmp_path / "strict"))
    assert (result.n_in, result.n_kept, result.n_rejected) == (5, 0, 5)
    assert result.reasons == {"filter:caption_too_short": 5}
    assert storage.read_parquet(result.rejects_uri).num_rows == 5
    assert storage.read_json(str(tmp_path / "strict" / "shard-00000.json"))["n_rejected"] == 5


def test_committed_shard_is_skipped_and_uncommitted_one_is_redone(tmp_path):
    in_uri = shard(tmp_path)
    out = str(tmp_path / "clean")
    first = engine.run_shard("clean", {}, in_uri, out)
    kept_bytes = storage.read_bytes(first.uri)
    # committed: a rerun does not touch the output
    storage.write_bytes(first.uri, b"sentinel")
    assert engine.run_shard("clean", {}, in_uri, out) == first
    assert storage.read_bytes(first.uri) == b"sentinel"
    # a crash before the marker: the half-written output is replaced by a full one
    storage.remove(str(tmp_path / "clean" / "shard-00000.json"))
    again = engine.run_shard("clean", {}, in_uri, out)
    assert again == first and storage.read_bytes(first.uri) == kept_bytes


class LosesRows(RowStage):
    name = "loses_rows"

    def process(self, batch):
        kept, rejected = super().process(batch)
        return kept.slice(1), rejected

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
        engine.run_shard("loses_rows", {}, in_uri, str(tmp_path / "out"))
    assert not storage.exists(str(tmp_path / "out" / "shard-00000.json"))  # nothing committed
    result = engine.run_shard("invents", {}, in_uri, str(tmp_path / "out2"))
    assert result.reasons == {"invents:odd": 5}
    engine._stage_for_process.cache_clear()


def test_setup_runs_once_per_process_and_config():
    engine._stage_for_process.cache_clear()
    a = engine.load_stage("filter", {"min_caption_words": 1})
    assert engine.load_stage("filter", {"min_caption_words": 1}) is a
    assert engine.load_stage("filter", {"min_caption_words": 2}) is not a


def test_stages_import_neither_prefect_nor_ray():
    code = ("import sys, tasks.engine, tasks.collect, tasks.publish, tasks.demo_corpus, tasks.registry;"
            "[tasks.registry.stage_class(n) for n in ('collect','clean','dedupe','filter','align','split')];"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'ray', 'prefect_ray'));"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
