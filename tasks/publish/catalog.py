"""What a storage root holds, for people: published versions, recent build runs, one version close up.

Read from storage alone (manifests, stats.json, the run records below), so `mmetl status` and
`mmetl inspect` work the same for a local folder and a bucket, whoever ran the builds: a nightly
deployment, a backfill, a person.

Run records: each build run writes `{root}/{dataset}/runs/{partition}--{run id}.json` when it starts
and again when it ends (state running → published | already published | nothing to build | failed).
A run killed outright stays `running`: its record says when it started.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime

from ..core import storage
from ..core.schema import SPLITS

SAMPLE_COLUMNS = ["sample_id", "modality", "source", "source_uri", "width", "height", "duration_s", "texts"]


def record_run(layout: storage.Layout, run_id: str, state: str, started_at: str | None = None, **facts) -> str:
    """Write (or overwrite) one run's record; returns its started_at for the closing write."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    storage.write_json(
        storage.join(layout.run_log, f"{layout.partition}--{run_id}.json"),
        {
            "run_id": run_id,
            "dataset": layout.dataset,
            "partition": layout.partition,
            "build_key": layout.build_key,
            "state": state,
            "started_at": started_at or now,
            "updated_at": now,
            **facts,
        },
    )
    return started_at or now


def recent_runs(root: str, dataset: str = "*", limit: int = 20) -> list[dict]:
    runs = [storage.read_json(uri) for uri in storage.glob(storage.join(root, dataset, "runs", "*.json"))]
    return sorted(runs, key=lambda r: r["started_at"], reverse=True)[:limit]


def versions(root: str, dataset: str = "*") -> list[dict]:
    """Every published version's manifest, newest partition first."""
    manifests = [
        storage.read_json(uri) for uri in storage.glob(storage.join(root, dataset, "versions", "*", "manifest.json"))
    ]
    return sorted(manifests, key=lambda m: (m["dataset"], m["partition"]), reverse=True)


def version_summary(manifest: dict) -> dict:
    """What `mmetl status` lists of a version."""
    return {
        "dataset": manifest["dataset"],
        "partition": manifest["partition"],
        "samples": {name: manifest["splits"].get(name, {}).get("samples", 0) for name in SPLITS},
        "rejected": manifest["rejected"],
        "created_at": manifest["created_at"],
        "build_key": manifest["build_key"],
        "stage_code_sha256": (manifest.get("code") or {}).get("stage_code_sha256"),
    }


def describe_version(version_uri: str, samples: int = 3) -> dict:
    """Counts, splits, reasons and a few items with their texts, of one published version."""
    manifest_uri = storage.join(version_uri, "manifest.json")
    if not storage.exists(manifest_uri):
        raise FileNotFoundError(f"no published version at {version_uri} (no manifest.json)")
    manifest = storage.read_json(manifest_uri)
    stats = storage.read_json(storage.join(version_uri, "stats.json"))
    examples = []
    for name, split in sorted(manifest["splits"].items(), key=lambda kv: SPLITS.index(kv[0])):
        if len(examples) >= samples:
            break
        table = storage.read_parquet(storage.join(version_uri, split["index"]))
        columns = [c for c in SAMPLE_COLUMNS if c in table.column_names]
        examples += [
            {"split": name, **row} for row in table.select(columns).slice(0, samples - len(examples)).to_pylist()
        ]
    modalities = Counter()
    for split in manifest["splits"].values():
        modalities.update(split.get("modalities", {}))
    return {"manifest": manifest, "stats": stats, "modalities": dict(modalities), "samples": examples}


VERIFIED = re.compile(r"waveform similarity ([0-9.]+)")


def duplicates(version_uri: str, modality: str) -> list[dict]:
    """A version's items rejected as copies of `modality`, each with what the pair was found and verified by:
    `similarity` is the waveform score of a sound's pair, None where it was not verified (a version built
    before sounds were verified, or a pair without media at hand): judge those, and rebuild the partition
    to re-decide them (docs/operations.md)."""
    rejects = storage.read_parquet(
        storage.join(version_uri, "rejects.parquet"),
        columns=["sample_id", "modality", "reason", "detail", "duplicate_of", "source_uri"],
    )
    found = []
    for row in rejects.to_pylist():
        if row["modality"] == modality and (row["reason"] or "").startswith("duplicate:"):
            score = VERIFIED.search(row["detail"] or "")
            found.append({**row, "similarity": float(score.group(1)) if score else None})
    return sorted(found, key=lambda r: (r["similarity"] is not None, r["similarity"] or 0, r["sample_id"]))
