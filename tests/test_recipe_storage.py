"""Recipes fail with errors that name the bad key; storage behaves the same on disk and on S3."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tasks.core import storage
from tasks.core.shards import ShardConfig
from tasks.recipe import RecipeError, load_recipe
from tasks.sources import Source, make_source
from tasks.stages.collect import plan_collect

GOOD = """
name: demo
source: {name: demo, kind: manifest, uri: /tmp/x/captions.jsonl}
"""


def plan(source: Source | list[Source], out_dir: str, max_items: int = 10, workers: int = 1) -> dict:
    sources = source if isinstance(source, list) else [source]
    return plan_collect(sources, "p", "r", ShardConfig(max_items=max_items), workers, out_dir)


def planned(result: dict) -> list[dict]:
    return [r for uri in result.shards for r in storage.read_parquet(uri).to_pylist()]


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_recipe_defaults_and_fingerprint(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD))
    assert recipe.split.ratios == (0.8, 0.1, 0.1) and recipe.filter.min_image_side == 32
    other = load_recipe(write(tmp_path, GOOD + "filter: {min_image_side: 64}\n"))
    assert recipe.fingerprint() != other.fingerprint()


@pytest.mark.parametrize(
    "text,message",
    [
        (GOOD + "filtr: {}\n", "filtr: Extra inputs are not permitted"),
        (GOOD + "clean: {image: {qualty: 90}}\n", "clean.image.qualty: Extra inputs are not permitted"),
        (GOOD + "network: {resize: {image_sise: 9}}\n", "network.resize.image_sise: Extra inputs are not permitted"),
        (GOOD + "dedupe: {captions: {treshold: 0.5}}\n", "dedupe.captions.treshold: Extra inputs are not permitted"),
        (GOOD.replace("kind: manifest", "kind: manifest, medai_root: x"), "source.manifest.medai_root: Extra inputs"),
        (GOOD + "filter: {min_audio_s: 9, max_audio_s: 3}\n", "min_audio_s (9.0) is above max_audio_s"),
        (GOOD + "split: {ratios: [0.5, 0.1, 0.1]}\n", "sum to 1"),
        (GOOD.replace("kind: manifest", "kind: ftp"), "source: Input tag 'ftp' found using 'kind'"),
        ("- just\n- a list\n", "a recipe is a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_recipes_name_the_bad_key(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(write(tmp_path, text))


def test_missing_recipe(tmp_path):
    with pytest.raises(RecipeError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    return request.getfixturevalue("s3") + f"/unit/{tmp_path.name}"


def test_storage_round_trip(root):
    table = pa.table({"a": [1, 2, 3]})
    storage.write_parquet(storage.join(root, "x/t.parquet"), table)
    storage.write_json(storage.join(root, "x/m.json"), {"k": 1})
    assert storage.read_parquet(storage.join(root, "x/t.parquet")).equals(table)
    assert storage.read_json(storage.join(root, "x/m.json")) == {"k": 1}
    assert storage.list_files(storage.join(root, "x")) == ["m.json", "t.parquet"]
    assert not storage.exists(storage.join(root, "x/none.json"))


def test_plan_collect_reads_manifest_from_s3_and_rejects_broken_rows(root):
    lines = [
        '{"media": "a.jpg", "modality": "image", "text": "a cat"}',
        '{"media": "b.jpg", "modality": "image"',
        '{"media": "c.wav", "modality": "smell", "text": "x"}',
        '["not", "an", "object"]',
        '{"media": "d.mp4", "modality": "video", "text": "a dog", "group": "clip-7"}',
    ]
    storage.write_bytes(storage.join(root, "src/captions.jsonl"), "\n".join(lines).encode())
    source = make_source(name="t", kind="manifest", uri=storage.join(root, "src/captions.jsonl"))
    result = plan(source, storage.join(root, "work/plan"), max_items=1)
    assert (result.n_rows, result.n_rows_kept, result.n_rejected, result.n_items) == (5, 2, 3, 2)
    assert len(result.shards) == 2
    rows = planned(result)
    assert [r["source_uri"] for r in rows] == [storage.join(root, "src/a.jpg"), storage.join(root, "src/d.mp4")]
    assert rows[1]["group_id"] == "t:clip-7" and rows[0]["group_id"] == "t:a.jpg"
    details = storage.read_parquet(result.rejects_uri).column("detail").to_pylist()
    assert details[0].startswith("not JSON") and "smell" in details[1] and details[2] == "not a JSON object"


def test_rows_naming_one_media_are_one_item_and_a_row_contradicting_its_first_is_a_bad_row(tmp_path):
    lines = [
        '{"media": "b.jpg", "modality": "image", "text": "first b"}',
        '{"media": "a.jpg", "modality": "image", "text": "a cat", "group": "g1"}',
        '{"media": "b.jpg", "modality": "audio", "text": "b as a sound"}',
        '{"media": "c.jpg", "modality": "image", "text": "c", "group": "g1"}',
        '{"media": "b.jpg", "modality": "image", "text": "second b"}',
        '{"media": "d.jpg", "modality": "image", "text": "d"}',
    ]
    storage.write_bytes(str(tmp_path / "src/captions.jsonl"), "\n".join(lines).encode())
    source = make_source(name="t", kind="manifest", uri=str(tmp_path / "src/captions.jsonl"))
    result = plan(source, str(tmp_path / "plan"), max_items=2)
    assert (result.n_rows, result.n_rows_kept, result.n_rejected, result.n_items) == (6, 5, 1, 4)
    rows = planned(result)
    assert [r["source_uri"].rsplit("/", 1)[-1] for r in rows] == ["b.jpg", "a.jpg", "c.jpg", "d.jpg"]  # as first read
    assert [t["text"] for t in rows[0]["texts"]] == ["first b", "second b"] and rows[0]["source_rows"] == [0, 4]
    assert rows[1]["group_id"] == rows[2]["group_id"] == "t:g1"
    assert (rows[0]["group_id"], rows[3]["group_id"]) == ("t:b.jpg", "t:d.jpg")
    rejects = storage.read_parquet(result.rejects_uri).to_pylist()
    assert [(r["source_rows"], r["detail"]) for r in rejects] == [
        ([2], "b.jpg is named as image on row 0 and as audio here")
    ]
    assert rejects[0]["texts"][0]["text"] == "b as a sound"


def test_plan_collect_folder_of_media_with_sidecar_captions(tmp_path):
    from .helpers import image_bytes

    storage.write_bytes(str(tmp_path / "src/cat.jpg"), image_bytes())
    storage.write_bytes(str(tmp_path / "src/cat.txt"), b"a cat")
    storage.write_bytes(str(tmp_path / "src/dog.jpg"), image_bytes(seed=2))
    storage.write_bytes(str(tmp_path / "src/notes.xyz"), b"?")
    storage.write_bytes(str(tmp_path / "src/notes.txt"), b"?")
    source = make_source(name="t", kind="folder", uri=str(tmp_path / "src"))
    result = plan(source, str(tmp_path / "plan"))
    assert (result.n_items, result.n_rejected) == (1, 2)
    details = sorted(storage.read_parquet(result.rejects_uri).column("detail").to_pylist())
    assert details == [
        "extension of notes.xyz is not a known media type",
        "no sidecar caption (.txt or .json) beside it",
    ]


def test_collect_stage_reads_media_from_object_storage(s3, tmp_path):
    from tasks.build import engine

    from .helpers import image_bytes

    root = f"{s3}/collect/{tmp_path.name}"
    picture = image_bytes()
    storage.write_bytes(storage.join(root, "src/a.jpg"), picture)
    lines = [
        '{"media": "a.jpg", "modality": "image", "text": "a cat"}',
        '{"media": "gone.jpg", "modality": "image", "text": "a ghost"}',
    ]
    storage.write_bytes(storage.join(root, "src/captions.jsonl"), "\n".join(lines).encode())
    source = make_source(name="t", kind="manifest", uri=storage.join(root, "src/captions.jsonl"))
    result = plan(source, storage.join(root, "work/plan"))
    sizes = {r["source_uri"].rsplit("/", 1)[1]: r["media_size"] for r in planned(result)}
    assert sizes == {"a.jpg": len(picture), "gone.jpg": None}  # listed at plan time, one listing per folder
    step = engine.run_step(
        "collect", [("collect", {})], result.shards[0], storage.join(root, "work/collect"), writes_media=True
    )
    assert (step.stages[0].n_kept, step.stages[0].reasons) == (1, {"collect:missing_media": 1})
    (row,) = storage.read_parquet(step.uri).to_pylist()
    assert row["media_ext"] == "jpg" and row["media_size"] == len(picture)
    assert storage.read_parquet(step.media_uri).column("media_bytes").to_pylist() == [picture]


def test_ids_and_groups_do_not_depend_on_where_the_corpus_sits(tmp_path, s3):
    lines = "\n".join(
        [
            '{"media": "a.jpg", "modality": "image", "text": "a cat"}',
            '{"media": "sub/b.mp4", "modality": "video", "text": "a dog"}',
        ]
    ).encode()
    plans = []
    for root in (str(tmp_path / "here"), str(tmp_path / "elsewhere" / "deeper"), f"{s3}/moved/{tmp_path.name}"):
        storage.write_bytes(storage.join(root, "captions.jsonl"), lines)
        source = make_source(name="t", kind="manifest", uri=storage.join(root, "captions.jsonl"))
        rows = planned(plan(source, storage.join(root, "plan")))
        plans.append([(r["sample_id"], r["group_id"]) for r in rows])
    assert plans[0] == plans[1] == plans[2]


def test_plan_collect_is_strict_about_odd_rows_and_forgiving_about_encoding(tmp_path):
    rows = [
        '{"media": "a.jpg", "modality": "image", "text": "a line\u2028separator inside a caption"}',
        '{"media": "b.jpg", "modality": "image", "text": 5}',
        '{"media": null, "modality": "image", "text": "no media"}',
        '{"media": "c.jpg", "modality": "image", "text": "listed group", "group": ["x"]}',
        '{"media": "d.jpg", "modality": "image", "text": "numbered group", "group": 7}',
    ]
    data = b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\n\xff\xfe not utf-8\n"
    storage.write_bytes(str(tmp_path / "captions.jsonl"), data)
    source = make_source(name="t", kind="manifest", uri=str(tmp_path / "captions.jsonl"))
    result = plan(source, str(tmp_path / "plan"))
    kept = planned(result)
    assert [r["source_rows"] for r in kept] == [[0], [4]]
    assert kept[0]["texts"][0]["text"] == "a line\u2028separator inside a caption" and kept[1]["group_id"] == "t:7"
    details = storage.read_parquet(result.rejects_uri).column("detail").to_pylist()
    assert [d.split(",")[0].split(":")[0] for d in details] == [
        "text must be a string",
        "media must be a non-empty string",
        "group must be a string or an integer",
        "not UTF-8",
    ]
    assert result.n_rows == 6 == result.n_rows_kept + result.n_rejected


def test_rows_naming_one_media_file_become_one_item_with_all_its_texts(tmp_path):
    """COCO's five captions of a picture: one item, five texts, one id, whatever the captions say."""
    row = '{"media": "%s", "modality": "image", "text": "%s"%s}'
    lines = [row % ("a.jpg", f"caption {i}", "") for i in range(5)] + [row % ("b.jpg", "b's caption", "")]
    lines.insert(2, row % ("c.mp4", "a clip", ', "group": "video-1"'))
    lines.append(row % ("a.jpg", "a sixth caption, in another group", ', "group": "video-1"'))
    lines.append('{"media": "a.jpg", "modality": "audio", "text": "the same file named as audio"}')
    storage.write_bytes(str(tmp_path / "captions.jsonl"), "\n".join(lines).encode())
    source = make_source(name="t", kind="manifest", uri=str(tmp_path / "captions.jsonl"))
    result = plan(source, str(tmp_path / "plan"))
    items = {r["source_uri"].rsplit("/", 1)[1]: r for r in planned(result)}
    assert (result.n_rows, result.n_items, result.n_rejected) == (9, 3, 1)
    a = items["a.jpg"]
    assert [t["text"] for t in a["texts"]] == [f"caption {i}" for i in range(5)] + ["a sixth caption, in another group"]
    assert a["source_rows"] == [0, 1, 3, 4, 5, 7]
    assert a["group_id"] == items["c.mp4"]["group_id"] == "t:video-1" != items["b.jpg"]["group_id"]
    assert "named as image on row 0 and as audio here" in storage.read_parquet(result.rejects_uri)["detail"][0].as_py()

    # the id is the media path as written: a new caption, an inserted line or a moved corpus keeps it
    lines.insert(0, row % ("d.jpg", "new", ""))
    storage.write_bytes(str(tmp_path / "moved" / "captions.jsonl"), "\n".join(lines).encode())
    again = planned(
        plan(
            make_source(name="t", kind="manifest", uri=str(tmp_path / "moved" / "captions.jsonl")),
            str(tmp_path / "plan2"),
        )
    )
    assert {r["sample_id"] for r in again} == {r["sample_id"] for r in items.values()} | {again[0]["sample_id"]}


def test_shards_are_bounded_by_items_and_bytes_and_give_every_worker_one():
    from tasks.core.shards import cut_shards

    config = ShardConfig(max_items=100, max_bytes="1MB")
    assert cut_shards([10] * 50, config, workers=4) == [(0, 13), (13, 26), (26, 39), (39, 50)]
    assert len(cut_shards([10] * 1000, config, workers=4)) == 12  # 10 by count, then whole waves of 4
    by_bytes = cut_shards([400_000] * 10, config, workers=1)
    assert by_bytes == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]  # 1 MB holds two
    assert cut_shards([5_000_000], config, workers=2) == [(0, 1)]  # one item bigger than a shard stands alone
    assert cut_shards([], config, workers=2) == [(0, 0)]


def test_exclusive_create_has_one_winner_with_content(root):
    uri = storage.join(root, "v", "_claim.json")
    assert storage.create_exclusive(uri, b'{"build_key": "a"}')
    assert not storage.create_exclusive(uri, b'{"build_key": "b"}')
    assert storage.read_json(uri) == {"build_key": "a"}
    assert storage.list_files(storage.join(root, "v")) == ["_claim.json"]  # no temp file left behind


def test_plan_collect_rejects_json_that_python_parses_badly(tmp_path):
    rows = [
        '{"media": "a.jpg", "modality": "image", "text": "cut mid-emoji \\ud83d"}',
        '{"media": "a.jpg", "modality": "image", "text": "ok", "group": ' + "9" * 5000 + "}",
        "[" * 5000 + "]" * 5000,
        '{"media": "a.jpg", "modality": "image", "text": "fine"}',
    ]
    storage.write_bytes(str(tmp_path / "captions.jsonl"), "\n".join(rows).encode())
    source = make_source(name="t", kind="manifest", uri=str(tmp_path / "captions.jsonl"))
    result = plan(source, str(tmp_path / "plan"))
    assert (result.n_items, result.n_rejected) == (1, 3)
    details = storage.read_parquet(result.rejects_uri).column("detail").to_pylist()
    assert (
        details[0].startswith("text: not valid Unicode")
        and "ValueError" in details[1]
        and "RecursionError" in details[2]
    )
