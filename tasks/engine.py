"""Run one stage over one shard: read, process in batches, reconcile counts, commit.

This is the unit of work and of retry. Plain Python: a Prefect task calls it on a Ray worker, tests
call it in a loop. Output names are deterministic and the shard's JSON marker is written last, so a
rerun skips committed shards and overwrites half-written ones.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import pyarrow as pa

from . import storage
from .registry import stage_class
from .schema import REJECT_SCHEMA, SAMPLE_SCHEMA
from .stage import Stage


class CountMismatch(RuntimeError):
    """A stage lost or invented rows: in != kept + rejected."""


@dataclass
class ShardResult:
    stage: str
    shard: str  # shard name, e.g. shard-00003
    uri: str  # kept rows
    rejects_uri: str
    n_in: int
    n_kept: int
    n_rejected: int
    reasons: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "ShardResult":
        return cls(**d)


def shard_name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1].removesuffix(".parquet")


@lru_cache(maxsize=16)
def _stage_for_process(stage: str, config_json: str) -> Stage:
    """One set-up stage instance per worker process and config: setup() runs once, not per shard."""
    instance = stage_class(stage)(**json.loads(config_json))
    instance.setup()
    return instance


def load_stage(stage: str, config: dict) -> Stage:
    return _stage_for_process(stage, json.dumps(config, sort_keys=True))


def run_shard(stage: str, config: dict, in_uri: str, out_dir: str, batch_rows: int = 256) -> ShardResult:
    name = shard_name(in_uri)
    marker = storage.join(out_dir, f"{name}.json")
    if storage.exists(marker):
        return ShardResult.from_dict(storage.read_json(marker))

    worker = load_stage(stage, config)
    kept_parts, reject_parts, in_ids = [], [], []
    for record_batch in storage.iter_parquet_batches(in_uri, batch_rows):
        batch = pa.Table.from_batches([record_batch]).cast(SAMPLE_SCHEMA)
        in_ids.extend(batch.column("sample_id").to_pylist())
        kept, rejected = worker.process(batch)
        kept_parts.append(kept.cast(SAMPLE_SCHEMA))
        reject_parts.append(rejected.cast(REJECT_SCHEMA))
    kept = pa.concat_tables(kept_parts) if kept_parts else SAMPLE_SCHEMA.empty_table()
    rejected = pa.concat_tables(reject_parts) if reject_parts else REJECT_SCHEMA.empty_table()

    check_reconciles(stage, name, in_ids, kept, rejected)
    result = ShardResult(
        stage=stage,
        shard=name,
        uri=storage.join(out_dir, f"{name}.parquet"),
        rejects_uri=storage.join(out_dir, f"{name}.rejects.parquet"),
        n_in=len(in_ids),
        n_kept=kept.num_rows,
        n_rejected=rejected.num_rows,
        reasons=dict(sorted(Counter(rejected.column("reason").to_pylist()).items())),
    )
    storage.write_parquet(result.uri, kept)
    storage.write_parquet(result.rejects_uri, rejected)
    storage.write_json(marker, asdict(result))  # the commit point, last
    return result


def check_reconciles(stage: str, shard: str, in_ids: list[str], kept: pa.Table, rejected: pa.Table) -> None:
    out_ids = kept.column("sample_id").to_pylist() + rejected.column("sample_id").to_pylist()
    if len(in_ids) != len(out_ids) or sorted(in_ids) != sorted(out_ids):
        lost = sorted(set(in_ids) - set(out_ids))[:5]
        invented = sorted(set(out_ids) - set(in_ids))[:5]
        raise CountMismatch(
            f"{stage}/{shard}: in={len(in_ids)} but kept={kept.num_rows} + rejected={rejected.num_rows}"
            f" (lost {lost}, unexpected {invented})"
        )


def summarize(stage: str, results: list[ShardResult]) -> dict:
    """One funnel step: a stage's totals over its shards, each shard already reconciled."""
    reasons: Counter[str] = Counter()
    for r in results:
        reasons.update(r.reasons)
    return {
        "stage": stage,
        "shards": len(results),
        "in": sum(r.n_in for r in results),
        "kept": sum(r.n_kept for r in results),
        "rejected": sum(r.n_rejected for r in results),
        "reasons": dict(sorted(reasons.items())),
    }


def commit_stage(stage: str, out_dir: str, results: list[ShardResult]) -> dict:
    """Write the stage's manifest (the shards the next stage reads) once all of them committed;
    return its funnel step."""
    step = summarize(stage, results)
    manifest = {"shards": [asdict(r) for r in results], "summary": step}
    storage.write_json(storage.join(out_dir, "_manifest.json"), manifest)
    return step
