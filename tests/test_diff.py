"""`mmetl diff`: two nights of one source, the second with a stricter filter and a caption added, explained."""

from __future__ import annotations

import json
import random

from flows.cli import main
from tasks.build.pipeline import build_locally
from tasks.core import storage
from tasks.recipe import Recipe
from tasks.sources import make_source

from .helpers import image_bytes


def _night(tmp_path, name: str, rows: list[dict], min_side: int) -> Recipe:
    (tmp_path / name).write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(name="pics", kind="manifest", uri=str(tmp_path / name))
    return Recipe.model_validate(
        {
            "name": "pics",
            "source": source,
            "filter": {"min_image_side": min_side},
            "dedupe": {"against_published": False, "image_radius": None},
        }  # fmt: skip
    )


def test_diff_explains_every_removed_item_by_the_changed_rule(tmp_path, capsys):
    rng = random.Random(0)
    sizes = [(rng.choice([40, 60, 120, 160]), rng.choice([50, 130])) for _ in range(30)]
    for i, size in enumerate(sizes):
        storage.write_bytes(str(tmp_path / f"p{i}.jpg"), image_bytes(size=size, seed=i))
    rows = [{"media": f"p{i}.jpg", "modality": "image", "text": f"picture number {i} of the set"} for i in range(30)]
    root = str(tmp_path / "out")
    first, _ = build_locally(_night(tmp_path, "one.jsonl", rows, 32), root, "2026-01-01")
    rows.append({"media": "p0.jpg", "modality": "image", "text": "another caption for the first picture"})
    second, _ = build_locally(_night(tmp_path, "two.jsonl", rows, 100), root, "2026-01-02")

    assert main(["diff", "pics/2026-01-01", "pics/2026-01-02", "--storage", root, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    small = {i for i, (w, h) in enumerate(sizes) if min(w, h) < 100}
    assert found["removed"] == len(small) and found["added"] == 0 and found["moved_split"] == 0
    assert found["removed_by_reason"] == {"rejected: filter:image_too_small": len(small)}
    assert found["recipe_changes"]["filter.min_image_side"] == [32, 100]
    assert found["recipe_changes"]["source.uri"][1].endswith("two.jsonl")  # the second night's file
    assert found["texts_changed"] == (0 if 0 in small else 1)
    assert found["by_source_modality"]["pics/image"]["removed"] == len(small)

    assert main(["diff", first.version, second.version]) == 0
    printed = capsys.readouterr().out
    assert f"removed: rejected: filter:image_too_small: {len(small)}" in printed
    assert "recipe filter.min_image_side: 32 -> 100" in printed
    assert main(["diff", "pics/2026-01-01", "pics/1999-01-01", "--storage", root]) == 2
