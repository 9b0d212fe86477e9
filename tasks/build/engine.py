"""Run one step (consecutive stages, fused) over one shard: stream batches, reconcile counts, commit.

A step is the unit of work and of retry: a Prefect task calls `run_step` on a Ray worker, tests call
it in a loop. Inside, the shard's items flow batch by batch through every stage of the step, so a
worker holds one batch of media at a time, not the shard. Each stage still reconciles its counts
(in = kept + rejected, per batch) and reports its own rejects and funnel line.

Work shards hold metadata only. The step that cleans media writes it once, as it goes, to
`<shard>.media.parquet`; later steps never copy it. Output names are deterministic and the shard's
JSON marker is written last, so a rerun skips committed shards and overwrites half-written ones.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import pyarrow as pa

from ..core import storage
from ..core.committed import Record, committed
from ..core.schema import DROPPED_TEXT_SCHEMA, MEDIA_SCHEMA, REJECT_SCHEMA, SAMPLE_SCHEMA
from ..core.shards import bounded_ranges, shard_name
from ..stages.stage import ItemError, Stage
from .registry import stage_class

# Media is already compressed (JPEG, FLAC, H.264) and each value is unique: compression, a dictionary or
# min/max statistics would only copy every value again (a 16 MB recording: 118 MB of writer memory, 54 without)
MEDIA_PARQUET = dict(compression="none", use_dictionary=["sample_id"], write_statistics=["sample_id"])


class CountMismatch(RuntimeError):
    """A stage lost or invented items: in != kept + rejected."""


@dataclass
class StageCounts:
    stage: str
    n_in: int = 0
    n_kept: int = 0
    n_rejected: int = 0
    n_items: int | None = None  # items handed on, where the stage makes items (a video's scenes)
    reasons: dict[str, int] = field(default_factory=dict)
    texts_dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class StepResult(Record):
    step: str  # e.g. collect-clean
    shard: str  # shard name, e.g. shard-00003
    uri: str  # kept items (metadata)
    media_uri: str | None  # their media, where this step wrote it
    rejects_uri: str
    dropped_texts_uri: str
    stages: list[StageCounts]

    @classmethod
    def restored(cls, recorded: dict, **arguments) -> StepResult:
        return cls(**{**recorded, "stages": [StageCounts(**s) for s in recorded["stages"]]})

    @property
    def items_in(self) -> int:
        return self.stages[0].n_in


class StepError(RuntimeError):
    """A step failed on a shard; the message names the step, the shard and, where known, the item."""


@lru_cache(maxsize=16)
def _stage_for_process(stage: str, config_json: str) -> Stage:
    """One set-up stage instance per worker process and config: setup() runs once, not per shard."""
    instance = stage_class(stage)(**json.loads(config_json))
    instance.setup()
    return instance


def load_stage(stage: str, config: dict) -> Stage:
    return _stage_for_process(stage, json.dumps(config, sort_keys=True))


@committed(
    lambda in_uri, out_dir, **_: storage.join(out_dir, f"{shard_name(in_uri)}.json"),
    StepResult,
)
def run_step(
    step: str,
    stages: list[tuple[str, dict]],
    in_uri: str,
    out_dir: str,
    batch_items: int = 256,
    batch_bytes: int = 64 * 2**20,
    writes_media: bool = False,
) -> StepResult:
    name = shard_name(in_uri)
    workers = [load_stage(stage, config) for stage, config in stages]
    for worker in workers:
        worker.start_shard(name)
    items = storage.read_parquet(in_uri).cast(SAMPLE_SCHEMA)  # metadata only: small
    tally = _Tally([stage for stage, _ in stages], name, where=f"{step} {name} ({in_uri})")
    media_uri = storage.join(out_dir, f"{name}.media.parquet") if writes_media else None
    writing = storage.parquet_writer(media_uri, MEDIA_SCHEMA, **MEDIA_PARQUET) if media_uri else nullcontext()
    with writing as media_writer:
        for batch in _batches(items, workers[0], batch_items, batch_bytes):
            for i, worker in enumerate(workers):
                batch = tally.through(i, worker, batch)
            if media_writer is not None:  # the batch's media leaves memory here, written once
                media_writer.write_table(batch.select(MEDIA_SCHEMA.names).cast(MEDIA_SCHEMA))
                batch = _without_media(batch)
            tally.kept.append(batch)
    for worker in workers:
        worker.finish_shard(name)

    result = StepResult(
        step=step,
        shard=name,
        uri=storage.join(out_dir, f"{name}.parquet"),
        media_uri=media_uri,
        rejects_uri=storage.join(out_dir, f"{name}.rejects.parquet"),
        dropped_texts_uri=storage.join(out_dir, f"{name}.dropped_texts.parquet"),
        stages=tally.counted(),
    )
    storage.write_parquet(result.uri, _concat(tally.kept, SAMPLE_SCHEMA))
    storage.write_parquet(result.rejects_uri, _concat(tally.rejects, REJECT_SCHEMA))
    storage.write_parquet(result.dropped_texts_uri, _concat(tally.texts, DROPPED_TEXT_SCHEMA))
    return result


def _batches(items: pa.Table, first: Stage, batch_items: int, batch_bytes: int) -> Iterator[pa.Table]:
    """The shard's items in batches bounded by items and bytes. The first stage is shown each batch one
    ahead, in order: it may start what waits (downloads) early. Not when the two batches' known bytes pass
    the bound: a second batch of long recordings read ahead was a fifth of a worker's memory
    (bench/worker_memory.py)."""
    sizes = items.column("media_size").fill_null(0).to_pylist()
    ranges = bounded_ranges(sizes, batch_items, batch_bytes)
    batches = [items.slice(start, end - start) for start, end in ranges]
    known = [sum(sizes[start:end]) for start, end in ranges]  # media bytes the plan measured (not downloads)
    for ahead in batches[:1]:
        first.prefetch(ahead)
    for n, batch in enumerate(batches):
        for ahead in batches[n + 1 : n + 2]:
            if known[n] + known[n + 1] <= batch_bytes:
                first.prefetch(ahead)
        yield batch


class _Tally:
    """A shard's run through a step's stages: each stage's reconciled counts and reasons, and the rows kept,
    rejected and the texts dropped."""

    def __init__(self, stages: list[str], shard: str, where: str):
        self.shard, self.where = shard, where  # where: the step, shard and input, for errors
        self.counts = [StageCounts(stage) for stage in stages]
        self.reasons = [Counter() for _ in stages]
        self.dropped = [Counter() for _ in stages]
        self.kept, self.rejects, self.texts = [], [], []

    def through(self, i: int, worker: Stage, batch: pa.Table) -> pa.Table:
        """The batch through stage `i`, its counts reconciled and added: what it kept."""
        in_ids = batch.column("sample_id").to_pylist()
        try:
            kept, rejected, dropped_texts = worker.process(batch)
        except Exception as e:
            raise StepError(f"{self.where}: {e if isinstance(e, ItemError) else repr(e)}") from e
        count = self.counts[i]
        origins = _origins(kept, worker.derived_from)
        check_reconciles(count.stage, self.shard, in_ids, origins, rejected)
        count.n_in += len(in_ids)
        count.n_kept += len(origins)
        if worker.derived_from:
            count.n_items = (count.n_items or 0) + kept.num_rows
        count.n_rejected += rejected.num_rows
        self.reasons[i].update(rejected.column("reason").to_pylist())
        self.dropped[i].update(dropped_texts.column("reason").to_pylist())
        self.rejects.append(rejected.cast(REJECT_SCHEMA))
        self.texts.append(dropped_texts.cast(DROPPED_TEXT_SCHEMA))
        return kept.cast(SAMPLE_SCHEMA)

    def counted(self) -> list[StageCounts]:
        for count, why, texts in zip(self.counts, self.reasons, self.dropped):
            count.reasons, count.texts_dropped = dict(sorted(why.items())), dict(sorted(texts.items()))
        return self.counts


def _without_media(batch: pa.Table) -> pa.Table:
    for column in ("media_bytes", "sidecars"):
        field = batch.schema.field(column)
        batch = batch.set_column(batch.schema.get_field_index(column), field, pa.nulls(batch.num_rows, field.type))
    return batch


def _concat(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _origins(kept: pa.Table, derived_from: str | None) -> list[str]:
    """The items a stage took in that it kept: the kept rows' ids, or, where it makes items, the ids of what
    each was made from (an item it left whole is its own origin), once each."""
    ids = kept.column("sample_id").to_pylist()
    if derived_from is None:
        return ids
    made_from = kept.column(derived_from).to_pylist()
    return list(dict.fromkeys(origin or own for origin, own in zip(made_from, ids)))


def check_reconciles(stage: str, shard: str, in_ids: list[str], kept_ids: list[str], rejected: pa.Table) -> None:
    out_ids = kept_ids + rejected.column("sample_id").to_pylist()
    if len(in_ids) != len(out_ids) or sorted(in_ids) != sorted(out_ids):
        lost = sorted(set(in_ids) - set(out_ids))[:5]
        invented = sorted(set(out_ids) - set(in_ids))[:5]
        raise CountMismatch(
            f"{stage}/{shard}: in={len(in_ids)} but kept={len(kept_ids)} + rejected={rejected.num_rows}"
            f" (lost {lost}, unexpected {invented})"
        )


def summarize(results: list[StepResult]) -> list[dict]:
    """A step's funnel lines, one per stage: its totals over the shards, each shard already reconciled."""
    if not results:
        return []
    lines = []
    for i, stage in enumerate(c.stage for c in results[0].stages):
        reasons: Counter[str] = Counter()
        texts: Counter[str] = Counter()
        for r in results:
            reasons.update(r.stages[i].reasons)
            texts.update(r.stages[i].texts_dropped)
        lines.append(
            {
                "stage": stage,
                "shards": len(results),
                "in": sum(r.stages[i].n_in for r in results),
                "kept": sum(r.stages[i].n_kept for r in results),
                "rejected": sum(r.stages[i].n_rejected for r in results),
                **_items(results, i),
                "reasons": dict(sorted(reasons.items())),
                "texts_dropped": dict(sorted(texts.items())),
            }
        )
    return lines


def _items(results: list[StepResult], i: int) -> dict:
    """`items`: what stage i handed on, where it makes items (check_funnel takes it as the next stage's in)."""
    made = [r.stages[i].n_items for r in results]
    return {"items": sum(n or 0 for n in made)} if any(n is not None for n in made) else {}


def commit_step(out_dir: str, results: list[StepResult]) -> list[dict]:
    """Record the step's shards once all of them committed; return its funnel lines."""
    lines = summarize(results)
    storage.write_json(
        storage.join(out_dir, "_manifest.json"), {"shards": [asdict(r) for r in results], "funnel": lines}
    )
    return lines
