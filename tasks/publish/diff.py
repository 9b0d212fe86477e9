"""`mmetl diff A B`: what changed between two published versions of a dataset, and why.

Items are compared by sample id (stable across runs: the source and the media path). For each item A published
and B does not, the reason comes from B's own records: withdrawn (a backfill's older copy won), taken down
(the dataset's takedowns.parquet), published by an earlier partition (B rejected it as `duplicate:published`:
it is still in that version), rejected by a rule (B's rejects.parquet: the reason, e.g. a changed threshold), or
not in B's sources at all. Items in both whose split differs (which must never happen) and whose texts differ
are listed; everything is counted per source and modality. The recipe keys and code that differ explain it.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from ..core import storage

INDEX_COLUMNS = ["sample_id", "source", "modality", "split", "texts"]
EXAMPLES = 5  # ids shown per kind of change


def version_uri(root: str, name: str) -> str:
    """A version folder or URI as given, or `<dataset>/<partition>` under the storage root."""
    if storage.exists(storage.join(name, "manifest.json")) or "/versions/" in name:
        return name
    dataset, _, partition = name.partition("/")
    return storage.join(root, dataset, "versions", partition)


def diff_versions(a: str, b: str) -> dict:
    """The changes from version `a` to version `b` (folders or URIs)."""
    manifests = [storage.read_json(storage.join(v, "manifest.json")) for v in (a, b)]
    before, after = (_items(v, m) for v, m in zip((a, b), manifests))
    why = _why_gone(b, manifests[1])
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    both = sorted(set(before) & set(after))
    moved = [s for s in both if before[s]["split"] != after[s]["split"]]
    retexted = [s for s in both if _texts(before[s]) != _texts(after[s])]
    reasons = Counter(why.get(s, "not in B's sources") for s in removed)
    per = defaultdict(Counter)
    for label, ids, items in (
        ("added", added, after),
        ("removed", removed, before),
        ("texts_changed", retexted, after),
    ):
        for s in ids:
            per[f"{items[s]['source']}/{items[s]['modality']}"][label] += 1
    return {
        "a": {"version": a, "partition": manifests[0]["partition"], "samples": len(before)},
        "b": {"version": b, "partition": manifests[1]["partition"], "samples": len(after)},
        "added": len(added),
        "removed": len(removed),
        "removed_by_reason": dict(sorted(reasons.items())),
        "moved_split": len(moved),  # must be 0: a group keeps the split a version gave it
        "texts_changed": len(retexted),
        "by_source_modality": {k: dict(sorted(v.items())) for k, v in sorted(per.items())},
        "examples": {
            "added": added[:EXAMPLES],
            "removed": [{"sample_id": s, "why": why.get(s, "not in B's sources")} for s in removed[:EXAMPLES]],
            "moved_split": [{"sample_id": s, "from": before[s]["split"], "to": after[s]["split"]} for s in moved],
            "texts_changed": retexted[:EXAMPLES],
        },
        "recipe_changes": _changes(manifests[0]["recipe"], manifests[1]["recipe"]),
        "code_changes": _changes(manifests[0].get("code") or {}, manifests[1].get("code") or {}),
    }


def _items(version: str, manifest: dict) -> dict[str, dict]:
    items = {}
    for split in manifest["splits"].values():
        for row in storage.read_parquet(storage.join(version, split["index"]), columns=INDEX_COLUMNS).to_pylist():
            items[row["sample_id"]] = row
    return items


def _texts(item: dict) -> list[tuple[str, str]]:
    return sorted((t["kind"], t["text"]) for t in item["texts"] or [])


def _why_gone(version: str, manifest: dict) -> dict[str, str]:
    """Why B does not publish an item, by sample id, from B's rejects and withdrawn lists and the takedowns."""
    why = {}
    if "rejects.parquet" in manifest["files"]:
        rejects = storage.read_parquet(
            storage.join(version, "rejects.parquet"), columns=["sample_id", "reason", "detail"]
        )
        for row in rejects.to_pylist():
            published = row["reason"] == "duplicate:published"
            why[row["sample_id"]] = (
                f"published earlier ({row['detail']})" if published else f"rejected: {row['reason']}"
            )
    if "withdrawn.parquet" in manifest["files"]:
        for row in storage.read_parquet(storage.join(version, "withdrawn.parquet")).to_pylist():
            why[row["sample_id"]] = f"withdrawn by {row['withdrawn_by']} (partition {manifest['partition']})"
    takedowns = storage.join(version.rsplit("/versions/", 1)[0], "takedowns.parquet")
    if storage.exists(takedowns):
        table = storage.read_parquet(takedowns)
        if "sample_id" in table.column_names:
            for row in table.select(["sample_id"] + [c for c in ("reason",) if c in table.column_names]).to_pylist():
                why[row["sample_id"]] = f"taken down: {row.get('reason') or 'listed'}"
    return why


def _changes(a: dict, b: dict, prefix: str = "") -> dict[str, list]:
    """Keys (dotted) whose values differ between two nested dicts: [a's value, b's value]."""
    found = {}
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        name = f"{prefix}{key}"
        if isinstance(x, dict) and isinstance(y, dict):
            found.update(_changes(x, y, f"{name}."))
        elif x != y:
            found[name] = [x, y]
    return found
