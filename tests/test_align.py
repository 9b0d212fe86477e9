"""Alignment scores with real models built here: an open_clip CLIP trained for seconds on coloured
shapes (it must tell matched captions from shuffled ones), and random tiny transformers CLIP and CLAP
folders (the pipeline's scores must equal the libraries' own on the published files)."""

from __future__ import annotations

import hashlib
import io
import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.build import audit
from tasks.build.pipeline import build_locally
from tasks.core import storage
from tasks.models.encoders import AudioTextEncoder, ImageTextEncoder
from tasks.recipe import Recipe, RecipeError, load_recipe
from tasks.sources import make_source
from tasks.stages.stage import Resources

from .helpers import audio_bytes, tar_members, video_bytes
from .tinymodels import CAPTIONS, shape_picture, tone, train_open_clip, transformers_clap, transformers_clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    return str(train_open_clip(tmp_path_factory.mktemp("models") / "tiny-clip", steps=200))


def _similarities(encoder: ImageTextEncoder, pictures, captions) -> np.ndarray:
    import torch

    images = encoder.encode_images(torch.stack([encoder.preprocess(p) for p in pictures]))
    return images @ encoder.encode_texts(captions).T


def _differs_in_both(a: str, b: str) -> bool:
    return all(x != y for x, y in zip(a.split()[1:], b.split()[1:]))


@pytest.fixture(scope="module")
def threshold(clip_dir) -> float:
    """Between matched pairs and pairs differing in colour and shape, on held-out pictures."""
    rng = random.Random(1234)
    captions = CAPTIONS * 4
    sims = _similarities(ImageTextEncoder(clip_dir, "cpu"), [shape_picture(c, rng) for c in captions], CAPTIONS)
    matched = [sims[i, CAPTIONS.index(c)] for i, c in enumerate(captions)]
    mismatched = [sims[i, j] for i, c in enumerate(captions) for j, o in enumerate(CAPTIONS) if _differs_in_both(c, o)]
    assert max(mismatched) < min(matched)
    return float((max(mismatched) + min(matched)) / 2)


def test_matched_pairs_score_above_shuffled_ones_on_held_out_pictures(clip_dir):
    rng = random.Random(7)
    captions = CAPTIONS * 3
    sims = _similarities(ImageTextEncoder(clip_dir, "cpu"), [shape_picture(c, rng) for c in captions], CAPTIONS)
    matched = np.array([sims[i, CAPTIONS.index(c)] for i, c in enumerate(captions)])
    shuffled = np.array([sims[i, j] for i, c in enumerate(captions) for j, o in enumerate(CAPTIONS) if o != c])
    auc = (matched[:, None] > shuffled[None, :]).mean()
    assert auc >= 0.9, auc


def _shapes_corpus(folder, n: int = 24, seed: int = 5) -> tuple[str, dict]:
    """A manifest of shape pictures: each with its caption; every third also with a caption differing in
    colour and shape (to be dropped), every fourth with only such a caption (to be rejected)."""
    rng = random.Random(seed)
    rows, planted = [], {"dropped": set(), "rejected": set()}
    for i in range(n):
        caption = CAPTIONS[i % len(CAPTIONS)]
        wrong = next(o for o in CAPTIONS[i % 5 :] + CAPTIONS if _differs_in_both(caption, o))
        name = f"shape{i:03d}.jpg"
        out = io.BytesIO()
        shape_picture(caption, rng).save(out, format="JPEG", quality=95)
        storage.write_bytes(str(folder / name), out.getvalue())
        if i % 4 == 3:
            texts = [wrong]
            planted["rejected"].add(name)
        else:
            texts = [caption] + ([wrong] if i % 3 == 0 else [])
            if i % 3 == 0:
                planted["dropped"].add((name, wrong))
        rows += [{"media": name, "modality": "image", "text": t} for t in texts]
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return str(folder / "captions.jsonl"), planted


# flat shapes on a flat ground are near-duplicates to pHash (docs/dedupe.md): these pictures are distinct
DISTINCT = {"image_radius": None, "captions": {"threshold": None}}


def _recipe(manifest: str, **align) -> Recipe:
    source = make_source(name="shapes", kind="manifest", uri=manifest)
    return Recipe.model_validate({"name": "shapes", "source": source, "align": align, "dedupe": DISTINCT})


def _index(version: str) -> list[dict]:
    manifest = json.loads(storage.read_bytes(f"{version}/manifest.json"))
    return [r for s in manifest["splits"].values() for r in pq.read_table(f"{version}/{s['index']}").to_pylist()]


def test_a_threshold_between_the_two_drops_the_planted_mismatches_and_keeps_the_matched(tmp_path, clip_dir, threshold):
    manifest, planted = _shapes_corpus(tmp_path / "shapes")
    recipe = _recipe(manifest, image_text={"model": clip_dir, "min_score": threshold, "batch_size": 8})
    root = str(tmp_path / "out")
    _, dry = build_locally(recipe, root, "p", workers=2, dry_run=True)
    predicted = audit.predictions(dry["predictions"])  # read before the build discards its work folder
    layout, built = build_locally(recipe, root, "p", workers=2)

    rejects = pq.read_table(f"{layout.version}/rejects.parquet").to_pylist()
    low = {r["source_uri"].rsplit("/", 1)[-1] for r in rejects if r["reason"] == "align:low_score"}
    assert low == planted["rejected"] and len(rejects) == len(low)
    dropped = pq.read_table(f"{layout.version}/dropped_texts.parquet").to_pylist()
    assert {(d["sample_id"], d["text"]) for d in dropped if d["reason"] == "align:low_score"} == {
        (_sample_id(layout.version, name), text) for name, text in planted["dropped"]
    }
    items = _index(layout.version)
    assert len(items) == 24 - len(planted["rejected"])
    for item in items:
        caption = CAPTIONS[int(item["source_uri"][-7:-4]) % len(CAPTIONS)]
        assert [t["text"] for t in item["texts"]] == [caption]  # only the matched caption stays
        scores = {s["name"]: s["value"] for s in item["scores"]}
        assert scores["align_max"] == pytest.approx(item["texts"][0]["align_score"], abs=1e-6)
        assert scores["align_max"] >= threshold
    # the dry run predicted exactly that, and the version says how it was filtered
    assert {k for k, v in predicted.items() if v == "align:low_score"} == {
        r["sample_id"] for r in rejects if r["reason"] == "align:low_score"
    }
    assert any(name.startswith("image align_score") for name in dry["dry_run"]["histograms"])
    weights = storage.read_bytes(f"{clip_dir}/open_clip_model.safetensors")
    recorded = built["manifest"]["align"]["image_text"]
    assert recorded == {
        "min_score": threshold,
        "model": {"name": "tiny-clip", "kind": "open_clip", "weights_sha256": hashlib.sha256(weights).hexdigest()},
    }
    assert storage.read_json(f"{layout.version}/stats.json")["align"] == built["manifest"]["align"]
    # the card's histogram holds every published score, with the threshold drawn as a line
    plot = Image.open(f"{layout.version}/plots/align_scores.png")
    panel = json.loads(plot.text["mmetl:data"])["panels"]["image-text align score"]
    assert sum(panel["counts"]) == sum(len(item["texts"]) for item in items)
    assert panel["lines"] == {"threshold": threshold} and min(panel["edges"]) >= threshold - 1e-6


def _sample_id(version: str, name: str) -> str:
    return next(r["sample_id"] for r in _index(version) if r["source_uri"].endswith(name))


def test_scores_equal_open_clips_own_on_the_published_files(tmp_path, clip_dir):
    import open_clip
    import torch

    manifest, _ = _shapes_corpus(tmp_path / "shapes", n=8)
    recipe = _recipe(manifest, image_text={"model": clip_dir}, keep_embeddings=True)
    layout, built = build_locally(recipe, str(tmp_path / "out"), "p")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{clip_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{clip_dir}")
    members = tar_members(layout.version)
    checked = 0
    for item in _index(layout.version):
        image = preprocess(Image.open(io.BytesIO(members[item["key"]]["jpg"]))).unsqueeze(0)
        with torch.no_grad():
            a = torch.nn.functional.normalize(model.encode_image(image), dim=-1)
            b = torch.nn.functional.normalize(model.encode_text(tokenizer([t["text"] for t in item["texts"]])), dim=-1)
        expected = (a @ b.T)[0].tolist()
        assert [t["align_score"] for t in item["texts"]] == pytest.approx(expected, abs=1e-4)
        assert json.loads(members[item["key"]]["json"])["texts"][0]["align_score"] == pytest.approx(expected[0], 1e-4)
        checked += len(expected)
    assert checked >= 8

    # the embeddings beside each split's index: every published item, its kept texts, in their order
    files = [f for f in built["manifest"]["files"] if f.endswith(".embeddings.parquet")]
    assert files and all(f.split("/")[0] in built["manifest"]["splits"] for f in files)
    vectors = {r["sample_id"]: r for f in files for r in pq.read_table(f"{layout.version}/{f}").to_pylist()}
    items = {item["sample_id"]: item for item in _index(layout.version)}
    assert vectors.keys() == items.keys()
    for sample_id, row in vectors.items():
        assert row["model"] == "tiny-clip" and row["modality"] == "image"
        assert [t["text"] for t in row["texts"]] == [t["text"] for t in items[sample_id]["texts"]]
        media = np.array(row["media"], dtype=np.float32)
        for text, published in zip(row["texts"], items[sample_id]["texts"]):
            cosine = float(media @ np.array(text["embedding"], dtype=np.float32))
            assert cosine == pytest.approx(published["align_score"], abs=5e-3)  # float16 vectors


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("hf")
    return {"clip": str(transformers_clip(folder / "clip")), "clap": str(transformers_clap(folder / "clap"))}


def test_transformers_clip_and_clap_scores_equal_the_libraries_on_images_videos_and_audio(tmp_path, hf_models):
    import av
    import torch
    import torchaudio.functional as F
    from transformers import AutoImageProcessor, AutoTokenizer, ClapFeatureExtractor, ClapModel, CLIPModel

    rows, folder = [], tmp_path / "mixed"
    rng = random.Random(3)
    for i, caption in enumerate(CAPTIONS[:4]):
        out = io.BytesIO()
        shape_picture(caption, rng).save(out, format="JPEG")
        storage.write_bytes(str(folder / f"img{i}.jpg"), out.getvalue())
        rows.append({"media": f"img{i}.jpg", "modality": "image", "text": caption})
    for i in range(2):
        storage.write_bytes(str(folder / f"clip{i}.mp4"), video_bytes(2.0, 2.0, seed=i))
        rows += [{"media": f"clip{i}.mp4", "modality": "video", "text": t} for t in ("a red square", "a blue circle")]
        storage.write_bytes(str(folder / f"tone{i}.flac"), audio_bytes(1.5 + i))  # one clip beyond the 1 s window
        rows += [{"media": f"tone{i}.flac", "modality": "audio", "text": t} for t in ("a tone rises", "a dog barks")]
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    recipe = Recipe.model_validate(
        {
            "name": "mixed",
            "source": make_source(name="mixed", kind="manifest", uri=str(folder / "captions.jsonl")),
            "features": {"keyframes": {"count": 4, "short_side": 32}},
            "filter": {"min_audio_s": 0.5},
            "dedupe": {"short_audio_max_db": None},  # the two synthetic tones are one sound to a print
            "align": {
                "image_text": {"model": hf_models["clip"]},
                "video_text": {"frames": 4},
                "audio_text": {"model": hf_models["clap"]},
                "require_video_audio": False,
            },
        }
    )
    layout, built = build_locally(recipe, str(tmp_path / "out"), "p")
    items, members = _index(layout.version), tar_members(layout.version)
    assert sorted(i["modality"] for i in items) == ["audio"] * 2 + ["image"] * 4 + ["video"] * 2

    clip = CLIPModel.from_pretrained(hf_models["clip"]).eval()
    pixels_of = AutoImageProcessor.from_pretrained(hf_models["clip"])
    clip_words = AutoTokenizer.from_pretrained(hf_models["clip"])
    clap = ClapModel.from_pretrained(hf_models["clap"]).eval()
    clap_audio = ClapFeatureExtractor.from_pretrained(hf_models["clap"])
    clap_words = AutoTokenizer.from_pretrained(hf_models["clap"])

    def unit(x):
        return torch.nn.functional.normalize(x, dim=-1)

    with torch.no_grad():
        for item in items:
            texts = [t["text"] for t in item["texts"]]
            files = members[item["key"]]
            if item["modality"] == "audio":
                with av.open(io.BytesIO(files["flac"])) as container:
                    samples = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
                    rate = container.streams.audio[0].rate
                mono = samples.astype(np.float32).mean(axis=0) / (32768.0 if samples.dtype == np.int16 else 1.0)
                mono = F.resample(torch.from_numpy(mono), rate, clap_audio.sampling_rate).numpy()[
                    : clap_audio.nb_max_samples
                ]
                inputs = clap_audio(
                    [mono], sampling_rate=clap_audio.sampling_rate, return_tensors="pt", truncation="rand_trunc"
                )  # an unfused model: one window (the first, already cut), repeat-padded
                media = unit(clap.get_audio_features(**inputs).pooler_output)
                words = clap_words(texts, padding=True, return_tensors="pt")
                expected = (media @ unit(clap.get_text_features(**words).pooler_output).T)[0]
            else:
                pictures = (
                    [files["jpg"]] if item["modality"] == "image" else [files[f"keyframe{i}.jpg"] for i in range(4)]
                )
                images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pictures]
                media = unit(clip.get_image_features(**pixels_of(images=images, return_tensors="pt")).pooler_output)
                words = clip_words(texts, padding=True, return_tensors="pt")
                expected = (media @ unit(clip.get_text_features(**words).pooler_output).T).mean(dim=0)
            assert [t["align_score"] for t in item["texts"]] == pytest.approx(expected.tolist(), abs=1e-4), item[
                "modality"
            ]
            assert expected.tolist() == sorted(expected.tolist(), reverse=True)  # best first
    assert set(built["manifest"]["align"]) == {"image_text", "video_text", "audio_text"}
    assert built["manifest"]["align"]["video_text"]["model"] == built["manifest"]["align"]["image_text"]["model"]


def test_clap_scores_the_same_first_window_every_time(hf_models):
    encoder = AudioTextEncoder(hf_models["clap"], "cpu")
    long = np.concatenate([tone(440, 1.0), tone(880, 2.0)])  # 3 s: three windows of the model's 1 s
    first = encoder.encode_audio([long])
    assert np.array_equal(first, encoder.encode_audio([long]))
    assert np.allclose(first, encoder.encode_audio([long[:16000]]), atol=1e-6)  # the first window, not a random one


def test_a_text_longer_than_the_context_is_truncated_not_an_error(clip_dir, hf_models):
    long = " ".join(["a red circle"] * 40)
    for path in (clip_dir, hf_models["clip"]):
        embedding = ImageTextEncoder(path, "cpu").encode_texts([long, "a red circle"])
        assert embedding.shape[0] == 2 and np.allclose(np.linalg.norm(embedding, axis=1), 1, atol=1e-5)
    assert AudioTextEncoder(hf_models["clap"], "cpu").encode_texts([long]).shape[0] == 1


@pytest.mark.parametrize("case", ["missing", "empty", "clap as image_text", "clip as audio_text", "no weights"])
def test_unusable_models_are_refused_when_the_recipe_loads(tmp_path, clip_dir, hf_models, case):
    (tmp_path / "empty").mkdir()
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text('{"model_type": "clip"}')
    key, path, message = {
        "missing": ("image_text", tmp_path / "nope", "no model directory at"),
        "empty": ("image_text", tmp_path / "empty", "has no open_clip_config.json"),
        "clap as image_text": ("image_text", hf_models["clap"], "is a clap model; image_text needs open_clip or clip"),
        "clip as audio_text": ("audio_text", clip_dir, "is a open_clip model; audio_text needs clap"),
        "no weights": ("image_text", tmp_path / "noweights", "has no weights file"),
    }[case]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: t\nsource: {{name: s, kind: manifest, uri: x.jsonl}}\nalign: {{{key}: {{model: {path}}}}}\n"
    )
    with pytest.raises(RecipeError, match=rf"align\.{key}\.model: Value error, .*{message}"):
        load_recipe(recipe)


def test_an_image_the_model_cannot_take_is_a_reject_not_a_crash(tmp_path, clip_dir):
    from tasks.core.schema import MEDIA_SCHEMA
    from tasks.stages.score import ScoreStage

    from .helpers import sample, table

    good = io.BytesIO()
    shape_picture("a red circle", random.Random(0)).save(good, format="JPEG")
    rows = [sample("image", "a red circle", n=0, sha256="a"), sample("image", "a blue square", n=1, sha256="b")]
    media = [{"sample_id": rows[0]["sample_id"], "media_bytes": good.getvalue()},
             {"sample_id": rows[1]["sample_id"], "media_bytes": b"not an image at all"}]  # fmt: skip
    storage.write_parquet(str(tmp_path / "shard-00000.media.parquet"), pa_table(media, MEDIA_SCHEMA))
    stage = ScoreStage(image_text={"model": clip_dir}, media_dir=str(tmp_path))
    stage.setup()
    stage.start_shard("shard-00000")
    kept, rejected, _ = stage.process(table(*rows))
    assert kept.column("sample_id").to_pylist() == [rows[0]["sample_id"]]
    (reject,) = rejected.to_pylist()
    assert reject["reason"] == "align:unscorable" and "UnidentifiedImageError" in reject["detail"]


def pa_table(rows: list[dict], schema):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=schema)


def test_heads_over_the_image_embedding_score_and_the_filter_decides(tmp_path, clip_dir, threshold):
    """Two tiny heads the test saves: `aesthetic` is minus the direction of "a green triangle", `nsfw` the
    direction of "a blue square" (a linear layer each). Green triangles fall below min_aesthetic, blue
    squares above max_nsfw; red circles stay, with both scores."""
    import torch
    from safetensors.torch import save_file

    encoder = ImageTextEncoder(clip_dir, "cpu")
    directions = encoder.encode_texts(["a green triangle", "a blue square"])
    save_file(
        {"0.weight": torch.from_numpy(-directions[:1]), "0.bias": torch.zeros(1)}, str(tmp_path / "a.safetensors")
    )
    torch.save(
        {"layers.0.weight": torch.from_numpy(directions[1:]), "layers.0.bias": torch.zeros(1)}, tmp_path / "n.pt"
    )

    rng, rows, folder = random.Random(11), [], tmp_path / "shapes"
    kinds = ["a red circle", "a green triangle", "a blue square"]
    for i in range(9):
        out = io.BytesIO()
        shape_picture(kinds[i % 3], rng).save(out, format="JPEG", quality=95)
        storage.write_bytes(str(folder / f"s{i}.jpg"), out.getvalue())
        rows.append({"media": f"s{i}.jpg", "modality": "image", "text": f"picture number {i}"})
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    recipe = Recipe.model_validate(
        {
            "name": "heads",
            "source": make_source(name="s", kind="manifest", uri=str(folder / "captions.jsonl")),
            "dedupe": DISTINCT,
            "filter": {"min_aesthetic": -threshold, "max_nsfw": threshold},
            "align": {
                "image_text": {"model": clip_dir},
                "heads": {"aesthetic": str(tmp_path / "a.safetensors"), "nsfw": str(tmp_path / "n.pt")},
            },
        }
    )
    layout, built = build_locally(recipe, str(tmp_path / "out"), "p")
    assert [line["stage"] for line in built["funnel"]][4:7] == ["score", "filter", "align"]  # filter after heads
    rejects = {
        r["source_uri"].rsplit("/", 1)[-1]: r["reason"]
        for r in pq.read_table(f"{layout.version}/rejects.parquet").to_pylist()
    }
    assert rejects == {f"s{i}.jpg": "filter:aesthetic" if i % 3 == 1 else "filter:nsfw" for i in range(9) if i % 3}
    for item in _index(layout.version):
        scores = {s["name"]: s["value"] for s in item["scores"]}
        assert scores["aesthetic"] >= -threshold and scores["nsfw"] <= threshold
    assert {i["source_uri"].rsplit("/", 1)[-1] for i in _index(layout.version)} == {"s0.jpg", "s3.jpg", "s6.jpg"}


def test_heads_need_a_file_and_an_image_model(tmp_path, clip_dir):
    source = {"name": "s", "kind": "manifest", "uri": "x"}
    missing = {"image_text": {"model": clip_dir}, "heads": {"nsfw": str(tmp_path / "no")}}
    with pytest.raises(ValueError, match="no head file at"):
        Recipe.model_validate({"name": "t", "source": source, "align": missing})
    alone = {"heads": {"nsfw": clip_dir + "/open_clip_config.json"}}
    with pytest.raises(ValueError, match="align.heads score image_text's embeddings"):
        Recipe.model_validate({"name": "t", "source": source, "align": alone})


def test_the_scoring_step_asks_for_a_gpu_where_the_cluster_has_one(tmp_path, clip_dir):
    from tasks.build.pipeline import Plan

    def score_step(**align):
        recipe = _recipe(str(tmp_path / "x.jsonl"), image_text={"model": clip_dir}, **align)
        plan = Plan(recipe, storage.Layout(str(tmp_path), "shapes", "p", "key"))
        assert [name for name, _ in plan.refine("d").stages] == ["dedupe", "filter"]
        return plan.score(), plan.ingest()

    step, ingest = score_step()
    assert [name for name, _ in step.stages] == ["score", "align"]
    assert step.resources(gpus=0) == Resources() and ingest.resources(gpus=4) == Resources()
    assert step.resources(gpus=2) == Resources(cpus=1, gpus=1.0)
    assert step.resources(gpus=2).ray_options() == {"num_cpus": 1, "num_gpus": 1.0}
    shared, _ = score_step(gpu_share=0.25)
    assert shared.resources(gpus=1) == Resources(gpus=0.25)
    forced, _ = score_step(device="cuda")
    assert forced.resources(gpus=0).gpus == 1.0  # the runner refuses it on a cluster with none
    cpu, _ = score_step(device="cpu")
    assert cpu.resources(gpus=8) == Resources()
