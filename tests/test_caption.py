"""Generated captions (`generate.caption`): a random tiny BLIP folder built here writes them through the build's
own stage, for pictures and videos; they are recorded, deterministic, and judged like any text."""

from __future__ import annotations

import hashlib
import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.build.pipeline import build_locally
from tasks.core import storage
from tasks.core.schema import SAMPLE_SCHEMA
from tasks.models.captioner import Captioner
from tasks.recipe import Recipe
from tasks.sources import make_source
from tasks.stages.align import AlignRules, AlignStage

from .helpers import sample, tar_members, video_bytes
from .tinymodels import CAPTIONS, shape_picture, train_open_clip, transformers_blip

DISTINCT = {"image_radius": None, "video_radius": None, "captions": {"threshold": None}}


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory) -> str:
    return str(transformers_blip(tmp_path_factory.mktemp("models") / "tiny-blip"))


def _corpus(folder, n: int = 10) -> str:
    rng, rows = random.Random(4), []
    for i in range(n):
        caption = CAPTIONS[i % len(CAPTIONS)]
        out = io.BytesIO()
        shape_picture(caption, rng).save(out, format="PNG")
        storage.write_bytes(str(folder / f"shape{i}.png"), out.getvalue())
        rows.append({"media": f"shape{i}.png", "modality": "image", "text": caption})
    storage.write_bytes(str(folder / "clip.mp4"), video_bytes(seconds=2.0, audio_seconds=2.0, seed=3))
    rows.append({"media": "clip.mp4", "modality": "video", "text": "a short clip of moving colours"})
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return str(folder / "corpus.jsonl")


def _recipe(manifest: str, **parts) -> Recipe:
    source = make_source(name="shapes", kind="manifest", uri=manifest)
    return Recipe.model_validate({"name": "shapes", "source": source, "dedupe": DISTINCT, **parts})


def _published(version: str) -> list[dict]:
    manifest = json.loads(storage.read_bytes(f"{version}/manifest.json"))
    return [r for s in manifest["splits"].values() for r in pq.read_table(f"{version}/{s['index']}").to_pylist()]


def _synthetic(items: list[dict]) -> dict[str, list[dict]]:
    return {item["sample_id"]: [t for t in item["texts"] if t["kind"] == "synthetic"] for item in items}


def test_every_picture_and_video_gets_one_recorded_caption_the_same_in_two_builds(tmp_path, blip_dir):
    recipe = _recipe(_corpus(tmp_path), generate={"caption": {"model": blip_dir, "batch_size": 4}})
    layout, built = build_locally(recipe, str(tmp_path / "one"), "p", workers=2)
    again, _ = build_locally(recipe, str(tmp_path / "two"), "p", workers=1)

    items = _published(layout.version)
    assert len(items) == 11 and {i["modality"] for i in items} == {"image", "video"}
    written = _synthetic(items)
    weights = hashlib.sha256(storage.read_bytes(f"{blip_dir}/model.safetensors")).hexdigest()
    for sample_id, texts in written.items():
        assert len(texts) == 1 and texts[0]["text"], sample_id
        assert texts[0]["generated_by"] == f"tiny-blip@{weights[:12]}" and texts[0]["words"] >= 1
    # the same picture gets the same caption whatever the sharding; what the model wrote, as it writes it
    assert written == _synthetic(_published(again.version))
    model = Captioner(blip_dir, "cpu", "", max_new_tokens=40)
    pictures = {i["sample_id"]: i for i in items if i["modality"] == "image"}
    first = next(iter(pictures))
    member = tar_members(layout.version)[pictures[first]["sample_id"]]
    picture = Image.open(io.BytesIO(next(data for ext, data in member.items() if ext in ("jpg", "png", "webp"))))
    assert model.caption([picture]) == [written[first][0]["text"]]
    meta = json.loads(member["json"])
    assert [t["generated_by"] for t in meta["texts"] if t["kind"] == "synthetic"] == [f"tiny-blip@{weights[:12]}"]
    recorded = built["manifest"]["generate"]["caption"]
    assert recorded["model"]["weights_sha256"] == weights and recorded["mode"] == "add"
    assert storage.read_json(f"{layout.version}/stats.json")["text_kinds"]["synthetic"] == 11
    assert "11 texts of kind `synthetic`" in storage.read_bytes(f"{layout.version}/README.md").decode()


def test_a_prompt_is_recorded_by_its_hash_and_cut_from_what_a_captioning_model_continues(tmp_path, blip_dir):
    model = Captioner(blip_dir, "cpu", "a picture of", max_new_tokens=6)
    caption = model.caption([shape_picture("a red circle", random.Random(0))])[0]
    assert caption and not caption.startswith("a picture of")
    recipe = _recipe(_corpus(tmp_path, n=2), generate={"caption": {"model": blip_dir, "prompt": "a picture of"}})
    layout, _ = build_locally(recipe, str(tmp_path / "out"), "p")
    by = {t["generated_by"] for texts in _synthetic(_published(layout.version)).values() for t in texts}
    assert by == {next(iter(by)).split("+")[0] + "+prompt:" + hashlib.sha256(b"a picture of").hexdigest()[:12]}


def test_a_missing_folder_or_a_model_that_cannot_caption_is_refused_naming_the_key(tmp_path, blip_dir):
    with pytest.raises(ValueError, match=r"generate.caption.model\n.*no vision-language model at"):
        _recipe("x.jsonl", generate={"caption": {"model": str(tmp_path / "absent")}})
    clip = train_open_clip(tmp_path / "clip", steps=1)
    (clip / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ValueError, match=r"generate.caption.model\n.*holds a 'clip' model; an image-text-to-text"):
        _recipe("x.jsonl", generate={"caption": {"model": str(clip)}})
    with pytest.raises(ValueError, match="replace_if_better compares image captions by align.image_text"):
        _recipe("x.jsonl", generate={"caption": {"model": blip_dir, "mode": "replace_if_better"}})


def test_replace_if_better_keeps_the_side_that_scores_higher():
    def row(sample_id: str, given: float, synthetic: float) -> dict:
        texts = [
            {"text": "a given caption", "kind": "caption", "align_score": given},
            {"text": "a generated caption", "kind": "synthetic", "align_score": synthetic},
            {"text": "dog", "kind": "label", "align_score": 0.01},  # not a caption: never replaced
        ]
        return sample(sample_id=sample_id, texts=texts, sha256="0" * 64)

    stage = AlignStage(AlignRules(replace_if_better=True))
    kept, rejected, dropped = stage.process(
        pa.Table.from_pylist([row("a", 0.2, 0.3), row("b", 0.4, 0.3)], SAMPLE_SCHEMA)
    )
    texts = {r["sample_id"]: [t["text"] for t in r["texts"]] for r in kept.to_pylist()}
    assert texts == {"a": ["a generated caption", "dog"], "b": ["a given caption", "dog"]}
    reasons = {(d["sample_id"], d["reason"]) for d in dropped.to_pylist()}
    assert reasons == {("a", "align:replaced"), ("b", "align:not_better")} and rejected.num_rows == 0


def test_replace_if_better_in_a_build_leaves_each_item_the_higher_scoring_side(tmp_path, blip_dir):
    clip = str(train_open_clip(tmp_path / "clip", steps=100))
    recipe = _recipe(
        _corpus(tmp_path, n=8),
        generate={"caption": {"model": blip_dir, "mode": "replace_if_better", "modalities": ["image"]}},
        align={"image_text": {"model": clip}, "video_text": {"model": clip}},
    )
    layout, _ = build_locally(recipe, str(tmp_path / "out"), "p", workers=2)
    dropped = pq.read_table(f"{layout.version}/dropped_texts.parquet").to_pylist()
    reasons = {d["sample_id"]: d["reason"] for d in dropped if d["reason"].startswith("align:")}
    for item in _published(layout.version):
        if item["modality"] != "image":
            continue
        kinds = [t["kind"] for t in item["texts"]]
        assert len(kinds) == 1  # one side, whichever scored higher
        assert reasons[item["sample_id"]] == ("align:replaced" if kinds == ["synthetic"] else "align:not_better")


@pytest.mark.e2e  # a Prefect server and a Ray cluster
def test_the_prefect_flow_on_ray_captions_and_groups_paraphrases(tmp_path, blip_dir, prefect_api, ray_cluster):
    """The same stages through the real runner: captions written on Ray workers, the semantic decision a task."""
    import yaml

    from flows.build import build_dataset

    corpus = _corpus(tmp_path, n=6)
    rows = [json.loads(line) for line in open(corpus)]
    rows[1]["text"], rows[4]["text"] = "a dog runs on the beach", "a dog running along the beach"  # paraphrases
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    recipe = {
        "name": "shapes",
        "source": {"name": "shapes", "kind": "manifest", "uri": corpus},
        "dedupe": {**DISTINCT, "semantic": {"captions": {}}},
        "generate": {"caption": {"model": blip_dir}},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = build_dataset(str(tmp_path / "recipe.yaml"), "2026-01-01", str(tmp_path / "out"))

    stages = [line["stage"] for line in result["funnel"]]
    assert stages == ["plan", "collect", "clean", "dedupe", "caption", "filter", "score", "align", "semantic", "split"]
    items = _published(result["version"])
    assert len(items) == 7 and all(len(texts) == 1 for texts in _synthetic(items).values())
    by_caption = {t["text"]: item for item in items for t in item["texts"] if t["kind"] == "caption"}
    dog, running = by_caption["a dog runs on the beach"], by_caption["a dog running along the beach"]
    assert dog["group_id"] == running["group_id"] and dog["split"] == running["split"]
    assert result["manifest"]["generate"]["caption"]["model"]["name"] == "tiny-blip"


def test_the_captioning_step_asks_for_a_gpu_where_the_cluster_has_one(tmp_path, blip_dir):
    from tasks.build.pipeline import Plan
    from tasks.stages.stage import Resources

    recipe = _recipe("x.jsonl", generate={"caption": {"model": blip_dir, "gpu_share": 0.5}})
    refine = Plan(recipe, storage.Layout(str(tmp_path), "t", "p", "k")).refine("d")
    assert [name for name, _ in refine.stages] == ["dedupe", "caption", "filter", "align"]
    assert refine.resources(gpus=0) == Resources() and refine.resources(gpus=2).gpus == 0.5
