"""Semantic dedupe (tasks/similar/semantic.py, tasks/stages/dedupe/semantic.py): captions compared by the real
all-MiniLM-L6-v2 model mmetl installs, pictures by the tiny CLIP the tests train, within and across versions."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from flows.reports import print_dry_run
from tasks.build.pipeline import build_locally
from tasks.core import storage
from tasks.models.encoders import MINILM, TextEncoder
from tasks.recipe import Recipe
from tasks.similar.semantic import nearest_better, removed_shares
from tasks.sources import make_source

from .helpers import image_bytes
from .tinymodels import shape_picture, train_open_clip

# paraphrases (cosine ≥ 0.9 by all-MiniLM-L6-v2) and captions on the same topics that say something else
PARAPHRASES = [
    ("a dog runs on the beach", "a dog running along the beach"),
    ("a red car parked on the street", "a red car is parked in the street"),
    ("a bowl of fresh strawberries on a wooden table", "fresh strawberries in a bowl on a wooden table"),
    ("a man riding a bicycle down a hill", "a man rides his bike down the hill"),
]
SAME_TOPIC = [
    "a dog sleeps on the beach", "a cat runs on the beach", "a horse runs on the beach",
    "a blue car parked on the street", "a red truck parked on the street",
    "a bowl of fresh blueberries on a wooden table", "a woman riding a bicycle down a hill",
    "a man pushing a bicycle up a hill",
]  # fmt: skip
# with no semantic part in these recipes, every other dedupe is off: only meaning can join these items
ONLY_SEMANTIC = {"image_radius": None, "captions": {"threshold": None}}


def _brute_force(vectors: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sims = vectors @ vectors.T
    parent, cosine = np.full(len(vectors), -1), np.full(len(vectors), -1.0, np.float32)
    for i in range(len(vectors)):
        better = np.flatnonzero(rank < rank[i])
        if len(better):
            parent[i] = better[sims[i, better].argmax()]
            cosine[i] = sims[i, parent[i]]
    return parent, cosine


def test_one_cluster_finds_each_items_nearest_better_member_exactly():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rank = rng.permutation(3000)
    parent, cosine = nearest_better(vectors, rank, clusters=1)  # 3000 rows: two blocks of BLOCK rows
    expected_parent, expected_cosine = _brute_force(vectors, rank)
    assert np.array_equal(parent, expected_parent)
    assert np.allclose(cosine, expected_cosine, atol=1e-5)


def test_clusters_compare_within_themselves_and_find_planted_near_copies():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(40, 32))
    base = centres[rng.integers(0, 40, 2000)] + rng.normal(scale=0.6, size=(2000, 32))
    copies = base[:300] + rng.normal(scale=0.02, size=(300, 32))  # a near copy of each of the first 300
    vectors = np.vstack([base, copies]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rank = np.arange(len(vectors))  # the originals rank first
    parent, cosine = nearest_better(vectors.astype(np.float16), rank)
    assert (parent[2000:] == np.arange(300)).mean() >= 0.99  # each copy finds its original (same cluster)
    assert (cosine[2000:] >= 0.99).mean() >= 0.99
    assert (cosine[:2000] < 0.95).all()  # no original is a copy of another
    shares = removed_shares(cosine, (0.01, 0.05, 0.2, 0.5))
    assert list(shares.values()) == sorted(shares.values())  # a larger ε removes more


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder(MINILM, "cpu")


def test_the_installed_sentence_model_tells_paraphrases_from_captions_on_the_same_topic(minilm):
    firsts, seconds = zip(*PARAPHRASES)
    a, b, others = (
        minilm.encode_texts(list(firsts)),
        minilm.encode_texts(list(seconds)),
        minilm.encode_texts(SAME_TOPIC),
    )
    paraphrased = (a * b).sum(axis=1)
    texts = np.vstack([a, b, others])
    sims = texts @ texts.T
    n = len(PARAPHRASES)
    pairs = {(i, i + n) for i in range(n)}
    unrelated = [sims[i, j] for i in range(len(texts)) for j in range(i + 1, len(texts)) if (i, j) not in pairs]
    assert paraphrased.min() >= 0.9 > max(unrelated), (paraphrased, max(unrelated))


def _captions_manifest(folder, captions: list[str], seed: int = 0, name: str = "captions.jsonl") -> str:
    """One distinct picture (random noise) per caption."""
    rows = []
    for i, caption in enumerate(captions):
        media = f"pic{seed}-{i:03d}.jpg"
        storage.write_bytes(str(folder / media), image_bytes(size=(64 + i, 48), seed=1000 * seed + i))
        rows.append({"media": media, "modality": "image", "text": caption})
    (folder / name).write_text("\n".join(json.dumps(r) for r in rows))
    return str(folder / name)


def _recipe(manifest: str, **dedupe) -> Recipe:
    source = make_source(name="pics", kind="manifest", uri=manifest)
    return Recipe.model_validate({"name": "pics", "source": source, "dedupe": {**ONLY_SEMANTIC, **dedupe}})


def _published(version: str) -> list[dict]:
    manifest = json.loads(storage.read_bytes(f"{version}/manifest.json"))
    return [r for s in manifest["splits"].values() for r in pq.read_table(f"{version}/{s['index']}").to_pylist()]


def _captioned(items: list[dict]) -> dict[str, dict]:
    return {item["texts"][0]["text"]: item for item in items}


def test_paraphrased_captions_are_rejected_naming_the_kept_item_and_same_topic_captions_stay(tmp_path):
    captions = [c for pair in PARAPHRASES for c in pair] + SAME_TOPIC
    manifest = _captions_manifest(tmp_path, captions)
    recipe = _recipe(manifest, semantic={"captions": {"mode": "reject", "epsilon": 0.1}})
    layout, _ = build_locally(recipe, str(tmp_path / "out"), "p", workers=2)

    items = _captioned(_published(layout.version))
    rejects = pq.read_table(f"{layout.version}/rejects.parquet").to_pylist()
    assert {r["reason"] for r in rejects} == {"duplicate:semantic"} and len(rejects) == len(PARAPHRASES)
    for first, second in PARAPHRASES:  # the larger picture of the two is kept (the keep policy: resolution)
        kept = items[second]
        reject = next(r for r in rejects if r["texts"][0]["text"] == first)
        assert first not in items and reject["duplicate_of"] == kept["sample_id"]
        assert "captions cosine 0.9" in reject["detail"] and "higher resolution" in reject["detail"]
    assert set(SAME_TOPIC) <= set(items)
    semantic = storage.read_json(f"{layout.version}/stats.json")["dedupe"]["semantic"]["captions"]
    assert semantic["duplicates"] == len(PARAPHRASES) and semantic["items"] == len(captions)
    shares = list(semantic["removed_share_by_epsilon"].values())
    assert shares == sorted(shares) and semantic["removed_share_by_epsilon"]["0.1"] == len(PARAPHRASES) / len(captions)
    card = storage.read_bytes(f"{layout.version}/README.md").decode()
    assert "| captions | 0.1 | rejected | 16 | 4 | 0 | 0.0% | 0.0% |" in card  # ε 0.01, 0.02: nothing
    assert "| semantic |" in card  # the funnel's line for the step that applied it


def test_group_mode_removes_nothing_and_puts_paraphrases_in_one_split(tmp_path):
    captions = [c for pair in PARAPHRASES for c in pair] + SAME_TOPIC
    manifest = _captions_manifest(tmp_path, captions)
    layout, _ = build_locally(_recipe(manifest, semantic={"captions": {}}), str(tmp_path / "out"), "p", workers=2)
    items = _captioned(_published(layout.version))
    assert set(items) == set(captions)
    for first, second in PARAPHRASES:
        assert items[first]["group_id"] == items[second]["group_id"]
        assert items[first]["split"] == items[second]["split"]
    groups = {items[c]["group_id"] for c in SAME_TOPIC}
    assert len(groups) == len(SAME_TOPIC)  # each its own


@pytest.mark.parametrize("mode", ["reject", "group"])
def test_a_paraphrase_of_a_published_caption_is_found_in_the_next_partition(tmp_path, mode):
    root = str(tmp_path / "out")
    first = _captions_manifest(tmp_path, [a for a, _ in PARAPHRASES] + SAME_TOPIC[:3], seed=1, name="one.jsonl")
    semantic = {"captions": {"mode": mode}}
    layout1, _ = build_locally(_recipe(first, semantic=semantic), root, "2026-01-01", workers=2)
    second = _captions_manifest(tmp_path, [b for _, b in PARAPHRASES] + SAME_TOPIC[3:], seed=2, name="two.jsonl")
    layout2, _ = build_locally(_recipe(second, semantic=semantic), root, "2026-01-02", workers=2)

    before = _captioned(_published(layout1.version))
    after = _captioned(_published(layout2.version))
    assert set(SAME_TOPIC[3:]) <= set(after)
    if mode == "reject":
        rejects = {r["texts"][0]["text"]: r for r in pq.read_table(f"{layout2.version}/rejects.parquet").to_pylist()}
        assert set(rejects) == {b for _, b in PARAPHRASES}
        for a, b in PARAPHRASES:
            assert rejects[b]["duplicate_of"] == before[a]["sample_id"]
            assert "published in partition 2026-01-01" in rejects[b]["detail"]
    else:
        for a, b in PARAPHRASES:  # the published group keeps its name, and so its split
            assert after[b]["group_id"] == before[a]["group_id"] and after[b]["split"] == before[a]["split"]
    stats = storage.read_json(f"{layout2.version}/stats.json")["dedupe"]["semantic"]["captions"]
    assert stats["of_published"] == len(PARAPHRASES)


def test_a_dry_run_reports_what_each_epsilon_would_remove_and_the_build_then_decides_anew(tmp_path, capsys):
    captions = [c for pair in PARAPHRASES for c in pair] + SAME_TOPIC
    recipe = _recipe(_captions_manifest(tmp_path, captions), semantic={"captions": {"mode": "reject"}})
    root = str(tmp_path / "out")
    _, dry = build_locally(recipe, root, "p", workers=2, dry_run=True)
    table = dry["dedupe"]["semantic"]["captions"]["removed_share_by_epsilon"]
    assert table["0.1"] == len(PARAPHRASES) / len(captions) and table["0.01"] == 0
    print_dry_run(dry)
    assert "semantic captions (ε 0.1, reject): share each ε would remove: 0.01: 0.0%" in capsys.readouterr().out
    layout, _ = build_locally(recipe, root, "p", workers=2)
    assert len(_published(layout.version)) == len(captions) - len(PARAPHRASES)


def test_semantic_dedupe_of_media_needs_the_align_model_that_embeds_it(tmp_path):
    with pytest.raises(ValueError, match=r"dedupe.semantic.image compares the embeddings of align.image_text.model"):
        _recipe(str(tmp_path / "x.jsonl"), semantic={"image": {}})
    with pytest.raises(ValueError, match=r"dedupe.semantic.captions.model\n.* has no .*modules.json"):
        _recipe(str(tmp_path / "x.jsonl"), semantic={"captions": {"model": str(tmp_path)}})
    with pytest.raises(ValueError, match=r"dedupe.semantic.captions.model\n.* holds a open_clip model"):
        train_open_clip(tmp_path / "clip", steps=1)
        _recipe(str(tmp_path / "x.jsonl"), semantic={"captions": {"model": str(tmp_path / "clip")}})


# Pictures: the tiny CLIP trained on coloured shapes embeds the same shape and colour alike, whatever its size,
# place and ground; a different shape or colour lies far.


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    return str(train_open_clip(tmp_path_factory.mktemp("models") / "tiny-clip", steps=200))


def _shapes_manifest(folder, captions: list[str], copies: int) -> tuple[str, dict[str, str]]:
    """`copies` pictures of each caption (other places, sizes and grounds); the last of each is drawn larger, so
    the keep policy (resolution first) ranks it first. Returns the manifest and each larger picture's caption."""
    rng, rows, largest = random.Random(3), [], {}
    for caption in captions:
        for k in range(copies):
            size = 128 if k == copies - 1 else 96
            media = f"{caption.replace(' ', '-')}-{k}.png"
            out = io.BytesIO()
            shape_picture(caption, rng, size=size).save(out, format="PNG")
            storage.write_bytes(str(folder / media), out.getvalue())
            rows.append({"media": media, "modality": "image", "text": f"picture {k} of {caption}"})
            if size == 128:
                largest[media] = caption
    (folder / "shapes.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return str(folder / "shapes.jsonl"), largest


def test_pictures_of_one_shape_and_colour_are_semantic_duplicates_and_the_largest_stays(tmp_path, clip_dir):
    captions = ["a red circle", "a blue square", "a green triangle", "a yellow circle"]
    manifest, largest = _shapes_manifest(tmp_path, captions, copies=3)
    source = make_source(name="shapes", kind="manifest", uri=manifest)
    recipe = Recipe.model_validate(
        {
            "name": "shapes",
            "source": source,
            "align": {"image_text": {"model": clip_dir}},
            # ε 0.3: pictures of one shape and colour lie at cosine ≥ 0.78 by this tiny model, of others ≤ 0.58
            "dedupe": {**ONLY_SEMANTIC, "semantic": {"image": {"mode": "reject", "epsilon": 0.3}}},
        }
    )
    layout, _ = build_locally(recipe, str(tmp_path / "out"), "p", workers=2)
    kept = _published(layout.version)
    assert sorted(item["source_uri"].rsplit("/", 1)[-1] for item in kept) == sorted(largest)
    rejects = pq.read_table(f"{layout.version}/rejects.parquet").to_pylist()
    assert {r["reason"] for r in rejects} == {"duplicate:semantic"} and len(rejects) == 2 * len(captions)
    by_id = {item["sample_id"]: largest[item["source_uri"].rsplit("/", 1)[-1]] for item in kept}
    for reject in rejects:  # each names the larger picture of its own shape and colour
        assert reject["texts"][0]["text"].endswith(by_id[reject["duplicate_of"]])


def test_a_larger_epsilon_rejects_a_superset_and_each_modality_reads_its_own_embeddings(tmp_path, minilm):
    """The decision itself, on shards written here: captions by the real sentence model, and a video's media
    embedding that must not be mistaken for a picture's."""
    from tasks.core.schema import EMBEDDING_SCHEMA, SAMPLE_SCHEMA, table_of
    from tasks.stages.dedupe import DedupeConfig
    from tasks.stages.dedupe.semantic import decide_semantic

    from .helpers import sample

    captions = [c for pair in PARAPHRASES for c in pair] + SAME_TOPIC
    rows = [sample(text=c, n=i, width=100 + i, height=100, sha256=f"{i:064d}") for i, c in enumerate(captions)]
    rows.append(sample(modality="video", text="a clip", n=99, width=64, height=64, sha256="9" * 64))
    storage.write_parquet(str(tmp_path / "shard-00000.parquet"), table_of(rows, SAMPLE_SCHEMA))
    vectors = minilm.encode_texts(captions)
    picture = np.eye(vectors.shape[1], dtype=np.float32)[0]
    embedded = [{"sample_id": r["sample_id"], "modality": "image", "media": picture.astype(np.float16),
                 "caption": v.astype(np.float16)} for r, v in zip(rows, vectors)]  # fmt: skip
    embedded.append({"sample_id": rows[-1]["sample_id"], "modality": "video", "media": picture.astype(np.float16)})
    storage.write_parquet(str(tmp_path / "shard-00000.embeddings.parquet"), table_of(embedded, EMBEDDING_SCHEMA))

    rejected = []
    for epsilon in (0.02, 0.05, 0.1, 0.2, 0.4):
        config = DedupeConfig(semantic={"captions": {"epsilon": epsilon, "mode": "reject"}, "image": {}})
        decision = decide_semantic(
            [str(tmp_path / "shard-00000.parquet")], [str(tmp_path / "shard-00000.embeddings.parquet")],
            str(tmp_path / f"decision-{epsilon}.parquet"), config,
        )  # fmt: skip
        found = storage.read_parquet(decision.uri).to_pylist()
        rejected.append({r["sample_id"] for r in found if r["reason"] == "duplicate:semantic"})
        # every picture shares one embedding: grouped (mode group), none rejected; the video is not a picture
        assert decision.report["image"]["items"] == len(captions) and decision.report["image"]["duplicates"] == 15
    assert all(a <= b for a, b in zip(rejected, rejected[1:])) and len(rejected[0]) < len(rejected[-1])
    paraphrased = {rows[2 * i]["sample_id"] for i in range(len(PARAPHRASES))}  # the smaller of each pair
    assert rejected[2] == paraphrased


def test_embeddings_a_version_published_before_captions_were_embedded_read_as_none(tmp_path):
    import pyarrow as pa

    from tasks.stages.dedupe.semantic import _read_vectors, _vectors

    old = pa.table({"sample_id": ["a"], "modality": ["image"], "model": ["clip"],
                    "media": pa.array([[1.0, 0.0]], pa.list_(pa.float16()))})  # fmt: skip
    storage.write_parquet(str(tmp_path / "old.embeddings.parquet"), old)
    table = _read_vectors(str(tmp_path / "old.embeddings.parquet"))
    assert _vectors(table, "captions")[0] == [] and _vectors(table, "image")[0] == ["a"]
