"""The build plan, in process: the dry run's prediction is the build's outcome, item by item, for every
rule; the step order exists once (tasks/build/pipeline.py) and the tests run it."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tasks.build import audit
from tasks.build.pipeline import Plan, build_locally
from tasks.build.registry import STAGES, OrderError, check_order
from tasks.core import storage
from tasks.demo.corpus import build_demo_corpus
from tasks.media.video import VideoCleanConfig
from tasks.recipe import Recipe
from tasks.sources import make_source
from tasks.stages import collect
from tasks.stages.align import AlignStage
from tasks.stages.filter import FilterStage
from tasks.stages.generate import GenerateConfig
from tasks.stages.plan_rows import PLANNED

from .helpers import real_photos

# thresholds that make nearly every rule fire on the small demo corpus
STRICT = {
    "min_image_side": 100,
    "max_image_aspect": 1.3,
    "min_image_std": 30.0,
    "min_audio_s": 1.2,
    "max_audio_s": 2.0,
    "max_silence_ratio": 0.2,
    "min_sample_rate": 22050,
    "min_video_s": 1.2,
    "max_video_s": 1.8,
    "min_video_side": 64,
    "min_video_fps": 12,
    "max_video_fps": 20,
    "min_caption_words": 4,
    "max_caption_words": 8,
    "languages": ["de"],
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """A small demo corpus (its planted problems included) and a COCO file of real photos whose
    images state three different licenses."""
    folder = tmp_path_factory.mktemp("corpus")
    manifest = build_demo_corpus(str(folder / "demo"), n_images=30, n_audio=10, n_video=6)
    photos = real_photos()
    licenses = [{"id": i, "name": name} for i, name in enumerate(["CC-BY", "cc-by-nc", "All rights reserved"])]
    images, annotations = [], []
    for n, (name, data) in enumerate(sorted(photos.items())):
        storage.write_bytes(str(folder / "coco" / f"{name}.jpg"), data)
        images.append({"id": n, "file_name": f"{name}.jpg", "license": n % 3 if n < 6 else None})
        annotations.append({"id": n, "image_id": n, "caption": f"a photograph called {name}"})
    coco = folder / "coco" / "captions.json"
    coco.write_text(json.dumps({"licenses": licenses, "images": images, "annotations": annotations}))
    return {"demo": manifest, "coco": str(coco), "coco_root": str(folder / "coco")}


def _recipe(corpus: dict, **settings) -> Recipe:
    sources = (
        make_source(name="demo", kind="manifest", uri=corpus["demo"]),
        make_source(name="coco", kind="coco", uri=corpus["coco"], media_root=corpus["coco_root"]),
    )
    return Recipe.model_validate({"name": "t", "sources": sources, "shards": {"max_items": 16}, **settings})


def _outcome(version: str) -> dict[str, str | None]:
    """sample_id -> the reason the build rejected it for, or None for a published item."""
    outcome = {r["sample_id"]: r["reason"] for r in pq.read_table(f"{version}/rejects.parquet").to_pylist()}
    for split in ("train", "val", "test"):
        if storage.exists(f"{version}/{split}/index.parquet"):
            outcome.update(
                dict.fromkeys(pq.read_table(f"{version}/{split}/index.parquet").column("sample_id").to_pylist())
            )
    return outcome


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"filter": {"licenses": ["cc-by"]}},
        {"filter": {"licenses": ["cc-by", "cc-by-nc"], "require_license": True}},
        {"filter": STRICT, "align": {"max_av_drift_s": 0.05}},
    ],
    ids=["demo", "licenses", "require-license", "strict"],
)
def test_the_dry_run_predicts_the_build_item_by_item(tmp_path, corpus, settings):
    recipe = _recipe(corpus, **settings)
    root = str(tmp_path / "out")
    _, dry = build_locally(recipe, root, "p", workers=2, dry_run=True)
    assert not storage.exists(f"{root}/t/versions/p/manifest.json")  # a dry run publishes nothing
    predicted = audit.predictions(dry["predictions"])

    layout, built = build_locally(recipe, root, "p", workers=2)
    outcome = _outcome(layout.version)
    judged = {k: v for k, v in outcome.items() if k in predicted}
    assert judged == predicted  # every item the dry run judged, and nothing else, ends as it said
    # what it did not judge was rejected before the rules (collect and clean), as the funnel says
    before = [line for line in built["funnel"] if line["stage"] in ("plan", "collect", "clean")]
    assert len(outcome) - len(predicted) == sum(line["rejected"] for line in before)

    counts = {line["rule"]: line["items"] for line in dry["dry_run"]["rules"]}
    licensed = sum(1 for reason in outcome.values() if reason == "filter:license")
    if settings.get("filter", {}).get("require_license"):
        # all-rights-reserved photos (2), the photo that states none, and every demo item (they state none)
        assert licensed > 3 + 20
    elif "licenses" in settings.get("filter", {}):
        # COCO states three licenses on six photos (two each), none on the seventh; the demo states none
        assert licensed == counts["filter:license"] == 4
    if settings.get("filter") == STRICT:
        fired = {reason for reason in predicted.values() if reason}
        every_rule_code = {
            "filter:image_too_small", "filter:extreme_aspect", "filter:caption_too_short", "filter:language",
            "filter:audio_too_short", "filter:audio_too_long", "filter:low_sample_rate", "filter:video_too_short",
            "filter:video_too_long", "filter:low_frame_rate", "align:no_audio_track",
        }  # fmt: skip
        assert every_rule_code <= fired | set(counts), every_rule_code - fired - set(counts)


def test_the_step_order_is_one_plan_of_registered_stages(tmp_path):
    """Every stage a plan names is registered, every registered stage is in the plan, once, in the
    documented order; and a dry run judges with the build's own rule stages."""
    plan = Plan(Recipe(name="t", source={"name": "s", "kind": "manifest", "uri": "x.jsonl"}), _layout(tmp_path))
    steps = [plan.ingest(), plan.refine("d.parquet"), plan.split("a.parquet", "documents.parquet")]
    order = [name for step in steps for name, _ in step.stages]
    assert order == ["collect", "clean", "dedupe", "filter", "align", "documents", "split"]
    # when the recipe asks for them
    assert set(STAGES) - set(order) == {"score", "transcribe", "caption", "scenes", "semantic", "blocklist"}
    transcribing = Plan(plan.recipe.model_copy(update={"generate": GenerateConfig(transcript={})}), plan.layout)
    assert [name for name, _ in transcribing.refine("d").stages] == ["dedupe", "transcribe", "filter", "align"]
    cutting = plan.recipe.model_copy(
        update={"clean": plan.recipe.clean.model_copy(update={"video": VideoCleanConfig(scenes={})})}
    )
    assert [name for name, _ in Plan(cutting, plan.layout).ingest().stages] == ["collect", "scenes", "clean"]
    assert [name for name, _ in plan.split("a.parquet").stages] == ["split"]  # no documents: no such stage
    judged = [STAGES[name] for name, _ in plan.refine("d").stages[1:]]  # what a dry run reports
    assert judged == [FilterStage, AlignStage]
    # settings travel as plain data and come back as the recipe's own models
    assert FilterStage(**plan.refine("d").stages[1][1]).config == plan.recipe.filtering


def test_a_plan_with_a_stage_before_what_it_reads_is_refused_when_made(tmp_path, corpus):
    with pytest.raises(OrderError, match="stage filter reads column duration_s, which no stage before it writes "
                       r"\(written by: clean\)"):  # fmt: skip
        check_order(["collect", "filter", "clean"])
    with pytest.raises(OrderError, match=r"stage split reads column group_id, .* \(written by: dedupe, semantic\)"):
        check_order(["collect", "clean", "split"], given=PLANNED - {"group_id"})
    check_order(["collect", "clean", "dedupe", "filter", "align", "documents", "split"])
    # every registered stage states what it reads; the plan fills the columns it says it fills, no others
    assert all(stage.reads for stage in STAGES.values())
    plan = Plan(_recipe(corpus), _layout(tmp_path))
    result = collect.plan_collect(
        list(plan.recipe.all_sources), "p", plan.run_id, plan.recipe.shards, 1, plan.layout.step_dir("plan")
    )
    table = storage.read_parquet(result.shards[0])
    filled = {name for name in table.column_names if table.column(name).null_count < table.num_rows}
    assert filled <= PLANNED and {"sample_id", "source_uri", "texts"} <= filled


def _layout(tmp_path):
    return storage.Layout(str(tmp_path), "t", "p", "key")


def _text(text: str, lang: str = "en", score: float = 0.9, flags: tuple[str, ...] = ()) -> dict:
    return {"text": text, "kind": "caption", "source": "t", "lang": lang, "lang_score": score, "flags": list(flags)}


def _scores(**values: float) -> list[dict]:
    return [{"name": k, "value": v} for k, v in sorted(values.items())]


GOOD_TEXT = _text("a red circle on a blue field")
IMAGE = dict(modality="image", width=200, height=150, sha256="i", scores=_scores(pixel_std=40.0))
AUDIO = dict(modality="audio", duration_s=3.0, sample_rate=16000, sha256="a")
AUDIO_SCORES = dict(silence_ratio=0.1, clipping_ratio=0.0)
VIDEO = dict(modality="video", width=320, height=240, fps=25.0, duration_s=4.0, audio_duration_s=4.0, sha256="v")
# one item per reject reason of every registered filter and align rule: (reason, the item's facts)
EVERY_RULE = [
    ("filter:image_too_small", {**IMAGE, "width": 20}),
    ("filter:extreme_aspect", {**IMAGE, "width": 1000, "height": 100}),
    ("filter:blank_image", {**IMAGE, "scores": _scores(pixel_std=0.5)}),
    ("filter:audio_too_short", {**AUDIO, "duration_s": 0.1, "scores": _scores(**AUDIO_SCORES)}),
    ("filter:audio_too_long", {**AUDIO, "duration_s": 600.0, "scores": _scores(**AUDIO_SCORES)}),
    ("filter:mostly_silent", {**AUDIO, "scores": _scores(**{**AUDIO_SCORES, "silence_ratio": 0.99})}),
    ("filter:clipped", {**AUDIO, "scores": _scores(**{**AUDIO_SCORES, "clipping_ratio": 0.5})}),
    ("filter:low_sample_rate", {**AUDIO, "sample_rate": 4000, "scores": _scores(**AUDIO_SCORES)}),
    ("filter:video_too_short", {**VIDEO, "duration_s": 0.2, "audio_duration_s": 0.2}),
    ("filter:video_too_long", {**VIDEO, "duration_s": 900.0, "audio_duration_s": 900.0}),
    ("filter:video_too_small", {**VIDEO, "width": 16, "height": 16}),
    ("filter:low_frame_rate", {**VIDEO, "fps": 0.5}),
    ("filter:high_frame_rate", {**VIDEO, "fps": 500.0}),
    ("filter:static_video", {**VIDEO, "scores": _scores(motion=0.001)}),
    ("filter:too_much_motion", {**VIDEO, "scores": _scores(motion=5.0)}),
    ("filter:license", {**IMAGE, "meta": json.dumps({"license": "all rights reserved"})}),
    ("filter:caption_too_short", {**IMAGE, "texts": [_text("cat")]}),
    ("filter:caption_too_long", {**IMAGE, "texts": [_text(" ".join(["word"] * 300))]}),
    ("filter:language", {**IMAGE, "texts": [_text("ein roter Kreis auf blauem Grund", "de", 0.99)]}),
    ("filter:boilerplate", {**IMAGE, "texts": [_text("image may contain: a thing", flags=("boilerplate",))]}),
    ("align:missing_media", {**IMAGE, "sha256": None}),
    ("align:missing_text", {**IMAGE, "texts": [_text("   ", score=0.0)]}),
    ("align:no_audio_track", {**VIDEO, "audio_duration_s": None}),
    ("align:av_drift", {**VIDEO, "audio_duration_s": 2.0}),
    (None, IMAGE),
    (None, {**AUDIO, "scores": _scores(**AUDIO_SCORES)}),
    (None, VIDEO),
    (None, {**IMAGE, "texts": [_text("cat"), GOOD_TEXT]}),  # one text dropped, the item kept
]


def test_every_rule_judges_alike_in_the_dry_run_and_the_build(tmp_path):
    """Every registered filter and align rule, each made to fail by one item: the dry run's prediction
    (tasks/build/audit.py) and the build's step (tasks/build/engine.py) agree, item by item."""
    from .helpers import sample

    config = {"licenses": ["cc-by"], "languages": ["en"], "min_motion": 0.02, "max_motion": 1.0}
    cases = [case for case in EVERY_RULE if case[0] != "align:missing_text"]
    rows = [{**sample(facts["modality"], n=n), "texts": [GOOD_TEXT], **facts} for n, (_, facts) in enumerate(cases)]
    outcome = _judged_both_ways(tmp_path / "a", rows, config)
    assert [outcome[row["sample_id"]] for row in rows] == [reason for reason, _ in cases]
    # a blank text passes the filter only when it asks for no words; align still refuses the item
    (reason, facts), *_ = [case for case in EVERY_RULE if case[0] == "align:missing_text"]
    blank = {**sample("image", n=99), **facts}
    assert _judged_both_ways(tmp_path / "b", [blank], {"min_caption_words": 0}) == {blank["sample_id"]: reason}

    # and every rule the stages hold failed some item above (a new rule needs an item of its own)
    for stage in (FilterStage(**config), AlignStage()):
        for rule in stage.item_rules:
            assert any(rule.applies(r) and _fails(rule, r) for r in [*rows, blank]), type(rule).__name__
        for rule in stage.text_rules:
            assert any(_fails(rule, t) for r in rows for t in r["texts"]), type(rule).__name__


def _fails(rule, judged: dict) -> bool:
    value = rule.measure(judged)
    return value is not None and rule.decide(value) is not None


def _judged_both_ways(folder, rows: list[dict], filter_settings: dict) -> dict[str, str | None]:
    """sample_id -> reject reason (None: kept) by the refine step, as the build runs it and as the dry run
    predicts it; fails unless the two agree."""
    import pyarrow as pa

    from tasks.build import engine

    from .helpers import table

    shard, decision = str(folder / "shard-00000.parquet"), str(folder / "decision.parquet")
    storage.write_parquet(shard, table(*rows))
    storage.write_parquet(decision, pa.table({"sample_id": pa.array([], pa.string())}))  # no duplicates
    step = Plan(_recipe_for_rules(filter_settings), _layout(folder)).refine(decision)

    out = audit.audit_shard(shard, step.stages, str(folder / "audit" / "shard-00000.json"))
    predicted = audit.predictions([out.predictions])
    built = engine.run_step(step.name, list(step.stages), shard, str(folder / "built"))
    outcome = dict.fromkeys(storage.read_parquet(built.uri).column("sample_id").to_pylist())
    outcome.update({r["sample_id"]: r["reason"] for r in storage.read_parquet(built.rejects_uri).to_pylist()})
    assert predicted == outcome
    return outcome


def _recipe_for_rules(filter_settings: dict) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "t",
            "source": {"name": "s", "kind": "manifest", "uri": "x.jsonl"},
            "filter": filter_settings,
            "clean": {"video": {"motion": True}},  # the motion rules judge its score
        }
    )
