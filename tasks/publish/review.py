"""The review loop: borderline items out to reviewers, their verdicts back into the next builds.

`mmetl review export VERSION --rule RULE --band LOW:HIGH` writes what a rule judged near its threshold: on the
kept side, the published items (or, for a text rule such as `align_score`, texts) whose score lies in the band;
on the rejected side, the rejects (or dropped texts) of that rule whose measured value lies in it (rejected
items are not published: the row carries their `source_uri`). Each row names the media (the source URI, and
for a published item its tar member), its texts, the score and the rule's verdict (`rule_verdict`). As Label
Studio import tasks (JSON: `[{"data": {...}}]`, one task a row; the labeling config: LABEL_CONFIG) or CSV.

`mmetl review import DATASET FILE` reads the reviewers' verdicts, from Label Studio's JSON export (each task's
`data` as exported, and its latest annotation not cancelled: a `choices` result of `keep` or `reject`) or from a
CSV with columns sample_id, text, rule, verdict, into the dataset's reviews.parquet (a later verdict on the same
item and text replaces an earlier one). Every later build's rule stages apply them (tasks/stages/rules.py).
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime

import pyarrow as pa

from ..core import storage

REVIEW_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("text", pa.string()),  # the text reviewed; null: the item
        ("rule", pa.string()),  # the score the rule judges (min_side, align_score, aesthetic, ...)
        ("verdict", pa.string()),  # keep | reject
        ("reviewer", pa.string()),
        ("reviewed_at", pa.string()),
        ("version", pa.string()),  # the version the row was exported from
    ]
)
KEEP, REJECT = {"keep", "accept", "approve", "restore"}, {"reject", "remove", "drop"}
LABEL_CONFIG = """<View>
  <Image name="image" value="$image" />
  <Text name="text" value="$text" />
  <Header value="$rule = $score ($rule_verdict)" />
  <Choices name="verdict" toName="text" choice="single" required="true">
    <Choice value="keep" />
    <Choice value="reject" />
  </Choices>
</View>
"""


def export_review(version: str, rule: str, band: tuple[float, float], limit: int | None = None) -> list[dict]:
    """The rows a reviewer sees: what `rule` judged with a value in `band`, kept and rejected, nearest the
    band's middle first."""
    low, high = band
    manifest = storage.read_json(storage.join(version, "manifest.json"))
    rows = _kept(version, manifest, rule, low, high) + _rejected(version, manifest, rule, low, high)
    middle = (low + high) / 2
    rows.sort(key=lambda r: (abs(r["score"] - middle), r["sample_id"], r["text"] or ""))
    return rows[:limit] if limit else rows


def _kept(version: str, manifest: dict, rule: str, low: float, high: float) -> list[dict]:
    found = []
    for split in manifest["splits"].values():
        index = storage.read_parquet(storage.join(version, split["index"]))
        for item in index.to_pylist():
            media = {"sample_id": item["sample_id"], "modality": item["modality"], "source": item["source"],
                     "source_uri": item["source_uri"], "member": f"{item['tar']}#{item['sample_id']}",
                     "version": version}  # fmt: skip
            score = next((s["value"] for s in item["scores"] or [] if s["name"] == rule), None)
            if score is not None and low <= score <= high:
                texts = " | ".join(t["text"] for t in item["texts"] or [])
                found.append({**media, "text": None, "texts": texts, "score": score, "rule_verdict": "kept"})
            for text in item["texts"] or []:
                value = text.get(rule)
                if isinstance(value, int | float) and low <= value <= high:
                    found.append({**media, "text": text["text"], "texts": text["text"], "score": float(value),
                                  "rule_verdict": "kept"})  # fmt: skip
    return found


def _rejected(version: str, manifest: dict, rule: str, low: float, high: float) -> list[dict]:
    """Rejects and dropped texts whose detail holds the rule's value (`min_side=60`, `align_score=0.2100 < 0.28`)."""
    measured = re.compile(rf"\b{re.escape(rule)}=(-?[0-9.]+(?:e-?\d+)?)")
    found = []
    for name, is_text in (("rejects.parquet", False), ("dropped_texts.parquet", True)):
        if name not in manifest["files"]:
            continue
        for row in storage.read_parquet(storage.join(version, name)).to_pylist():
            value = measured.search(row.get("detail") or "")
            if not value or not low <= float(value.group(1)) <= high:
                continue
            texts = row["text"] if is_text else " | ".join(t["text"] for t in row.get("texts") or [])
            found.append({"sample_id": row["sample_id"], "modality": row.get("modality"), "source": row.get("source"),
                          "source_uri": row.get("source_uri"), "member": None, "version": version,
                          "text": row["text"] if is_text else None, "texts": texts,
                          "score": float(value.group(1)), "rule_verdict": f"rejected: {row['reason']}"})  # fmt: skip
    return found


def label_studio_tasks(rows: list[dict], rule: str) -> list[dict]:
    """Label Studio import tasks: one a row, its fields under `data` (the media under its modality's name)."""
    tasks = []
    for row in rows:
        media = {row["modality"] or "image": row["source_uri"]}
        tasks.append({"data": {**row, **media, "rule": rule, "text": row["text"] or row["texts"]},
                      "meta": {"reviewed_text": row["text"]}})  # fmt: skip
    return tasks


def csv_rows(rows: list[dict], rule: str) -> str:
    out = io.StringIO()
    fields = ["sample_id", "text", "rule", "score", "rule_verdict", "verdict", "modality", "source", "source_uri",
              "member", "texts", "version"]  # fmt: skip
    writer = csv.DictWriter(out, fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:  # `verdict` is the reviewer's to fill: keep or reject
        writer.writerow({**row, "rule": rule, "verdict": ""})
    return out.getvalue()


def import_reviews(root: str, dataset: str, uri: str) -> dict:
    """Add a file of verdicts to the dataset's reviews.parquet; returns the counts read."""
    data = storage.read_bytes(uri)
    verdicts = _from_csv(data) if uri.endswith(".csv") else _from_label_studio(json.loads(data))
    target = storage.join(root, dataset, "reviews.parquet")
    rows = storage.read_parquet(target).to_pylist() if storage.exists(target) else []
    merged = {(r["sample_id"], r["text"]): r for r in rows}
    for verdict in verdicts:
        merged[(verdict["sample_id"], verdict["text"])] = verdict
    storage.write_parquet(target, pa.Table.from_pylist(sorted(merged.values(), key=_order), REVIEW_SCHEMA))
    return {"read": len(verdicts), "keep": sum(v["verdict"] == "keep" for v in verdicts),
            "reject": sum(v["verdict"] == "reject" for v in verdicts), "reviews": len(merged)}  # fmt: skip


def apply_rejections(root: str, dataset: str) -> dict:
    """The reviewers' rejected items taken out of the published versions too, as a takedown by id (and so for
    good: later builds block them). A rejected text, or a `keep` of an item a version did not publish, waits for
    the next build: its media were never published."""
    from .takedown import Request, remove

    reviews = storage.read_parquet(storage.join(root, dataset, "reviews.parquet")).to_pylist()
    ids = sorted({r["sample_id"] for r in reviews if r["verdict"] == "reject" and r["text"] is None})
    if not ids:
        return {"takedown": None, "versions": {}}
    return remove(root, dataset, Request(tuple(("id", s) for s in ids), "rejected by a reviewer"))


def _order(row: dict) -> tuple:
    return row["sample_id"], row["text"] or ""


def _from_label_studio(tasks: list) -> list[dict]:
    """Each task's latest annotation that was not cancelled, read as keep or reject (a task left unreviewed,
    or with another choice, says nothing)."""
    found = []
    for task in tasks if isinstance(tasks, list) else []:
        data = task.get("data") or {}
        done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not done or not data.get("sample_id"):
            continue
        latest = max(done, key=lambda a: a.get("updated_at") or a.get("created_at") or "")
        choices = [c.lower() for r in latest.get("result") or [] if r.get("type") == "choices"
                   for c in (r.get("value") or {}).get("choices") or []]  # fmt: skip
        verdict = "keep" if set(choices) & KEEP else "reject" if set(choices) & REJECT else None
        if verdict:
            text = (task.get("meta") or {}).get("reviewed_text")
            reviewer = latest.get("completed_by")
            found.append({"sample_id": data["sample_id"], "text": text, "rule": data.get("rule"), "verdict": verdict,
                          "reviewer": str(reviewer.get("email") if isinstance(reviewer, dict) else reviewer),
                          "reviewed_at": latest.get("updated_at") or latest.get("created_at"),
                          "version": data.get("version")})  # fmt: skip
    return found


def _from_csv(data: bytes) -> list[dict]:
    found = []
    for row in csv.DictReader(io.StringIO(data.decode())):
        verdict = (row.get("verdict") or "").strip().lower()
        verdict = "keep" if verdict in KEEP else "reject" if verdict in REJECT else None
        if verdict and row.get("sample_id"):
            found.append({"sample_id": row["sample_id"], "text": row.get("text") or None, "rule": row.get("rule"),
                          "verdict": verdict, "reviewer": row.get("reviewer"),
                          "reviewed_at": row.get("reviewed_at") or datetime.now(UTC).isoformat(timespec="seconds"),
                          "version": row.get("version")})  # fmt: skip
    return found
