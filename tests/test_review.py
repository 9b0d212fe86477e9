"""The review loop (tasks/publish/review.py, tasks/stages/rules.py): borderline items out as Label Studio tasks,
the reviewers' verdicts back through Label Studio's JSON export (or a CSV), and the next build exactly as
reviewed: a rejected item goes (`review:rejected`), a restored one stays against its rule, nothing else moves."""

from __future__ import annotations

import csv
import io
import json
import random

import pyarrow.parquet as pq

from flows.cli import main
from tasks.build.pipeline import build_locally
from tasks.core import storage
from tasks.recipe import Recipe
from tasks.sources import make_source

from .helpers import image_bytes


def _recipe(folder) -> Recipe:
    source = make_source(name="pics", kind="manifest", uri=str(folder / "pics.jsonl"))
    return Recipe.model_validate(
        {
            "name": "pics",
            "source": source,
            "filter": {"min_image_side": 100},
            "dedupe": {"image_radius": None, "against_published": False},
        }  # fmt: skip
    )


def _published(version: str) -> dict[str, dict]:
    manifest = json.loads(storage.read_bytes(f"{version}/manifest.json"))
    rows = [r for s in manifest["splits"].values() for r in pq.read_table(f"{version}/{s['index']}").to_pylist()]
    return {r["sample_id"]: r for r in rows}


def _label_studio_export(tasks: list[dict], verdicts: dict[int, str | None]) -> list[dict]:
    """What Label Studio's JSON export holds for these tasks (its documented shape): each task with its id, the
    data imported, and its annotations, each a list of results; `None` marks a cancelled (skipped) one."""
    exported = []
    for number, task in enumerate(tasks):
        annotations = []
        if number in verdicts:
            choice = verdicts[number]
            annotations.append({
                "id": 100 + number, "completed_by": 1, "was_cancelled": choice is None, "ground_truth": False,
                "created_at": "2026-12-01T10:00:00.000000Z", "updated_at": "2026-12-01T10:00:00.000000Z",
                "lead_time": 4.2, "result": [] if choice is None else [{
                    "id": f"r{number}", "type": "choices", "from_name": "verdict", "to_name": "text",
                    "origin": "manual", "value": {"choices": [choice]},
                }],
            })  # fmt: skip
        exported.append({"id": number + 1, "data": task["data"], "meta": task.get("meta", {}),
                         "annotations": annotations, "predictions": [], "project": 1})  # fmt: skip
    return exported


def test_a_review_round_trip_changes_the_next_build_exactly_as_reviewed(tmp_path, capsys):
    rng = random.Random(2)
    rows = []
    for i in range(24):
        side = rng.choice([40, 70, 90, 110, 130, 200])
        storage.write_bytes(str(tmp_path / f"p{i}.jpg"), image_bytes(size=(side, side + 10), seed=i))
        rows.append({"media": f"p{i}.jpg", "modality": "image", "text": f"picture number {i} of the set"})
    (tmp_path / "pics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    root = str(tmp_path / "out")
    first, _ = build_locally(_recipe(tmp_path), root, "2026-01-01")

    tasks_file = tmp_path / "tasks.json"
    assert main(["review", "export", "pics/2026-01-01", "--rule", "min_side", "--band", "60:140",
                 "--out", str(tasks_file), "--storage", root]) == 0  # fmt: skip
    tasks = json.loads(tasks_file.read_text())
    scores = [t["data"]["score"] for t in tasks]
    assert scores and all(60 <= s <= 140 for s in scores)
    sides = {t["data"]["rule_verdict"] for t in tasks}
    assert sides == {"kept", "rejected: filter:image_too_small"}  # both sides of the threshold, 100
    assert all(t["data"]["image"] and t["data"]["sample_id"] for t in tasks)
    kept_task = next(i for i, t in enumerate(tasks) if t["data"]["rule_verdict"] == "kept")
    restored_task = next(i for i, t in enumerate(tasks) if t["data"]["rule_verdict"] != "kept")
    skipped_task = next(i for i, t in enumerate(tasks) if i not in (kept_task, restored_task))
    export = tmp_path / "project-1-at-2026-12-01.json"
    export.write_text(
        json.dumps(_label_studio_export(tasks, {kept_task: "reject", restored_task: "keep", skipped_task: None}))
    )
    assert main(["review", "import", "pics", str(export), "--storage", root]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "read": 2,
        "keep": 1,
        "reject": 1,
        "reviews": 2,
    }

    second, _ = build_locally(_recipe(tmp_path), root, "2026-01-02")
    before, after = _published(first.version), _published(second.version)
    rejected, restored = tasks[kept_task]["data"]["sample_id"], tasks[restored_task]["data"]["sample_id"]
    assert set(after) == set(before) - {rejected} | {restored}
    reasons = {r["sample_id"]: r["reason"] for r in pq.read_table(f"{second.version}/rejects.parquet").to_pylist()}
    assert reasons[rejected] == "review:rejected" and restored not in reasons
    assert json.loads(after[restored]["features"])["review"] == {"kept_against": ["min_side"]}
    assert {s: r["split"] for s, r in after.items() if s in before} == {
        s: before[s]["split"] for s in after if s in before
    }
    stats = storage.read_json(f"{second.version}/stats.json")
    assert stats["reviews"] == {"kept_against_rule": 1, "rejected": 1}
    assert "Reviewers kept 1 items against a rule" in storage.read_bytes(f"{second.version}/README.md").decode()


def test_verdicts_from_a_csv_and_the_export_as_csv(tmp_path, capsys):
    rows = []
    for i, side in enumerate((70, 120)):
        storage.write_bytes(str(tmp_path / f"p{i}.jpg"), image_bytes(size=(side, side), seed=i))
        rows.append({"media": f"p{i}.jpg", "modality": "image", "text": f"picture number {i} of the set"})
    (tmp_path / "pics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    root = str(tmp_path / "out")
    build_locally(_recipe(tmp_path), root, "2026-01-01")
    assert main(["review", "export", "pics/2026-01-01", "--rule", "min_side", "--band", "0:1000", "--format", "csv",
                 "--storage", root]) == 0  # fmt: skip
    exported = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted(r["rule_verdict"] for r in exported) == ["kept", "rejected: filter:image_too_small"]
    for row in exported:  # a reviewer fills the `verdict` column: restore the small one, reject the other
        row["verdict"] = "reject" if row["rule_verdict"] == "kept" else "keep"
    out = io.StringIO()
    writer = csv.DictWriter(out, list(exported[0]))
    writer.writeheader()
    writer.writerows(exported)
    (tmp_path / "verdicts.csv").write_text(out.getvalue())
    assert main(["review", "import", "pics", str(tmp_path / "verdicts.csv"), "--storage", root]) == 0
    layout, _ = build_locally(_recipe(tmp_path), root, "2026-01-02")
    assert [r["width"] for r in _published(layout.version).values()] == [70]


def test_import_with_apply_takes_a_rejected_item_out_of_the_published_versions(tmp_path, capsys):
    for i in range(4):
        storage.write_bytes(str(tmp_path / f"p{i}.jpg"), image_bytes(size=(130 + i, 140), seed=i))
    rows = [{"media": f"p{i}.jpg", "modality": "image", "text": f"picture number {i} of the set"} for i in range(4)]
    (tmp_path / "pics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    root = str(tmp_path / "out")
    layout, _ = build_locally(_recipe(tmp_path), root, "2026-01-01")
    before = _published(layout.version)
    rejected = sorted(before)[0]
    (tmp_path / "verdicts.csv").write_text(f"sample_id,text,rule,verdict\n{rejected},,min_side,reject\n")
    assert main(["review", "import", "pics", str(tmp_path / "verdicts.csv"), "--apply", "--storage", root]) == 0
    applied = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["applied"]
    assert applied["versions"] == {"2026-01-01": {"revision": 1, "removed": 1}}
    assert set(_published(layout.version)) == set(before) - {rejected}
    record = pq.read_table(f"{root}/pics/takedowns.parquet").to_pylist()
    assert {r["reason"] for r in record} == {"rejected by a reviewer"}
