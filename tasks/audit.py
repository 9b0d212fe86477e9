"""Audit (`mmetl build --dry-run`): what the recipe's filters would do, without publishing.

`audit_shard` judges every cleaned item (less the duplicates the dedupe decision rejects) by every
filter rule on its own, not just the first that fails, and keeps every score; `summarize` adds the
shards up: per source and rule, the items and texts each threshold would drop, the items each source
would keep with all rules, and a histogram of each score.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from . import storage
from .filter import FilterStage

COLUMNS_NOT_READ = {"media_bytes", "sidecars"}


def audit_shard(shard_uri: str, decision_uri: str, thresholds: dict, out_uri: str) -> str:
    stage = FilterStage(**thresholds)
    duplicates = {
        r["sample_id"]
        for r in storage.read_parquet(decision_uri, columns=["sample_id", "duplicate_of"]).to_pylist()
        if r["duplicate_of"]
    }
    table = storage.read_parquet(shard_uri)
    rows = table.select([c for c in table.column_names if c not in COLUMNS_NOT_READ]).to_pylist()
    items, texts, kept = Counter(), Counter(), Counter()
    scores: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row["sample_id"] in duplicates:
            continue
        source = row["source"]
        failed = False
        for rule in stage.item_rules:
            if rule.modality not in (None, row["modality"]) or (value := rule.score(row)) is None:
                continue
            scores[f"{rule.modality} {rule.score_name}"].append(value)
            if code := rule.verdict(value):
                items[f"{source}\t{code}"] += 1
                failed = True
        texts_left = 0
        for text in row["texts"] or []:
            scores["caption_words"].append(float(len(text["text"].split())))
            if text.get("lang_score") is not None:
                scores["lang_score"].append(float(text["lang_score"]))
            failures = [f for rule in stage.text_rules if (f := rule.judge(text))]
            for code, _ in failures:
                texts[f"{source}\t{code}"] += 1
            texts_left += not failures
        kept[source] += 0 if failed or not texts_left else 1
        kept[f"{source}\tseen"] += 1
    storage.write_json(out_uri, {"items": items, "texts": texts, "kept": kept, "scores": scores})
    return out_uri


def summarize(audit_uris: list[str], bins: int = 10) -> dict:
    items, texts, kept = Counter(), Counter(), Counter()
    scores: dict[str, list[float]] = defaultdict(list)
    for uri in audit_uris:
        part = storage.read_json(uri)
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
            {
                "source": r.split("\t")[0],
                "rule": f"filter:{r.split(chr(9))[1]}",
                "items": items.get(r, 0),
                "texts": texts.get(r, 0),
            }
            for r in rules
        ],
        "kept": {s: {"kept": kept.get(s, 0), "of": kept.get(f"{s}\tseen", 0)} for s in sources},
        "histograms": histograms,
    }


def histogram_line(counts: list[int]) -> str:
    bars = " ▁▂▃▄▅▆▇█"
    top = max(counts) or 1
    return "".join(bars[0] if c == 0 else bars[max(1, round(c / top * 8))] for c in counts)
