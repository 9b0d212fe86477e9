"""Audit (`mmetl build --dry-run`): what the recipe's rules would do, without publishing.

`audit_shard` runs a cleaned shard through the very stages the build would (the dedupe decision
applied, then each rule stage's `judge` and `outcome`: tasks/stages/rules.py), so its prediction is the
build's outcome, item by item; beyond that it counts every rule an item fails, not just the first,
and keeps every measurement. It writes the per-item prediction (`<shard>.parquet`: sample_id,
source, the reject reason or null) and its counts (`<shard>.json`). `summarize` adds the shards up:
per source and rule the items and texts each threshold would drop, the items each source keeps with
all rules, and a histogram of each score.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..core import storage
from ..core.schema import SAMPLE_SCHEMA, table_of
from ..stages.rules import RuleStage
from ..stages.stage import Reject
from .engine import load_stage, shard_name

COLUMNS_NOT_READ = {"media_bytes", "sidecars"}
PREDICTION_SCHEMA = pa.schema([("sample_id", pa.string()), ("source", pa.string()), ("reason", pa.string())])


@dataclass(frozen=True)
class Audited:
    uri: str  # the shard's counts (JSON); its predictions beside it (`predictions`)
    items_in: int

    @property
    def predictions(self) -> str:
        return self.uri.removesuffix(".json") + ".parquet"


def audit_shard(shard_uri: str, stages: tuple[tuple[str, dict], ...], out_uri: str) -> Audited:
    """Judge the shard with `stages` (the build's stages from the dedupe decision to the split)."""
    workers = [load_stage(name, settings) for name, settings in stages]  # set up once per process, as in a build
    for worker in workers:
        worker.start_shard(shard_name(shard_uri))
    table = storage.read_parquet(shard_uri)
    live = table.select([c for c in table.column_names if c not in COLUMNS_NOT_READ]).to_pylist()
    out: list[dict] = []  # rows the build drops, still judged by later rules so that each rule counts alone
    reasons: dict[str, str] = {}
    items, texts = Counter(), Counter()
    scores: dict[str, list[float]] = defaultdict(list)
    for worker in workers:
        if not isinstance(worker, RuleStage):  # dedupe's decision, the model scores: as in the build
            kept, rejected, _ = worker.process(table_of(live, SAMPLE_SCHEMA))
            reasons.update(zip(rejected.column("sample_id").to_pylist(), rejected.column("reason").to_pylist()))
            live = kept.to_pylist()
            continue
        passed = []
        for row in live + out:
            judgement = worker.judge(row)
            for name, value in judgement.measured:
                scores[name].append(value)
            for code, _ in judgement.failures:
                items[f"{row['source']}\t{worker.reason(code)}"] += 1
            for failed in judgement.text_failures:
                for code, _ in failed:
                    texts[f"{row['source']}\t{worker.reason(code)}"] += 1
            result, _ = worker.outcome(row, judgement)
            if row["sample_id"] in reasons:
                continue
            if isinstance(result, Reject):
                reasons[row["sample_id"]] = worker.reason(result.code)
                out.append(row)
            else:
                passed.append(result)  # the next stage sees what this one passes on, as in the build
        live = passed
    for worker in workers:  # what a stage keeps of the shard (the score stage's embeddings: semantic dedupe's)
        worker.finish_shard(shard_name(shard_uri))
    judged = [
        r for r in table.select(["sample_id", "source"]).to_pylist() if not _duplicate(reasons.get(r["sample_id"]))
    ]
    kept = Counter(r["source"] for r in judged if r["sample_id"] not in reasons)
    seen = Counter(f"{r['source']}\tseen" for r in judged)
    rows = table.select(["sample_id", "source"]).to_pylist()
    audited = Audited(out_uri, table.num_rows)
    storage.write_parquet(
        audited.predictions,
        table_of([{**r, "reason": reasons.get(r["sample_id"])} for r in rows], PREDICTION_SCHEMA),
    )
    storage.write_json(out_uri, {"items": items, "texts": texts, "kept": kept + seen, "scores": scores})
    return audited


def _duplicate(reason: str | None) -> bool:
    return bool(reason) and reason.startswith("duplicate:")


def summarize(audits: list[Audited], bins: int = 10) -> dict:
    items, texts, kept = Counter(), Counter(), Counter()
    scores: dict[str, list[float]] = defaultdict(list)
    for audited in audits:
        part = storage.read_json(audited.uri)
        items.update(part["items"])
        texts.update(part["texts"])
        kept.update(part["kept"])
        for name, values in part["scores"].items():
            scores[name] += values
    rules = sorted({*items, *texts})
    histograms = {}
    for name, values in sorted(scores.items()):
        values = np.array(values, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if np.isclose(low, high):  # one value, give or take float noise: numpy cannot cut that range in ten
            low, high = low - 0.5, high + 0.5
        counts, _ = np.histogram(values, bins=bins, range=(low, high))
        histograms[name] = {"min": float(values.min()), "max": float(values.max()), "counts": counts.tolist()}
    sources = sorted({k.split("\t")[0] for k in kept})
    return {
        "rules": [
            {"source": r.split("\t")[0], "rule": r.split("\t")[1], "items": items.get(r, 0), "texts": texts.get(r, 0)}
            for r in rules
        ],
        "kept": {s: {"kept": kept.get(s, 0), "of": kept.get(f"{s}\tseen", 0)} for s in sources},
        "histograms": histograms,
    }


def predictions(uris: list[str]) -> dict[str, str | None]:
    """sample_id -> the reason the build would reject it for (None: kept), over a dry run's shards."""
    table = pa.concat_tables([storage.read_parquet(u) for u in uris])
    return dict(zip(table.column("sample_id").to_pylist(), table.column("reason").to_pylist()))


def histogram_line(counts: list[int]) -> str:
    bars = " ▁▂▃▄▅▆▇█"
    top = max(counts) or 1
    return "".join(bars[0] if c == 0 else bars[max(1, round(c / top * 8))] for c in counts)
