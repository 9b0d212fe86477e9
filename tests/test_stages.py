"""Stages called directly on tiny fixtures: each reason code, each fact, each global decision."""

from __future__ import annotations

import io
import random

import pyarrow.compute as pc
import pytest
from PIL import Image

from tasks.core import storage
from tasks.stages.align import AlignStage
from tasks.stages.clean import CleanStage
from tasks.stages.dedupe import DedupeConfig, DedupeStage, decide_duplicates
from tasks.stages.filter import FilterStage
from tasks.stages.split import SplitConfig, SplitStage, assign_splits

from .helpers import (
    audio_bytes,
    flac_in_matroska,
    image_bytes,
    matroska_video,
    png_with_alpha,
    sample,
    table,
    timed_video,
    video_bytes,
    wide_png,
    write_shards,
)


def run(stage, *rows, with_dropped_texts=False):
    stage.setup()
    kept, rejected, dropped = stage.process(table(*rows))
    assert kept.num_rows + rejected.num_rows == len(rows)
    out = kept.to_pylist(), rejected.to_pylist()
    return (*out, dropped.to_pylist()) if with_dropped_texts else out


def test_clean_records_facts_for_each_modality():
    kept, rejected = run(
        CleanStage(),
        sample("image", media=image_bytes((80, 60)), n=0),
        sample("audio", "a middle tone that rises", media=audio_bytes(1.5, "wav"), n=1),
        sample("video", "a red square moving left", media=video_bytes(1.0, 1.0), n=2),
    )
    assert rejected == []
    image, audio, video = kept
    assert (image["width"], image["height"], image["media_ext"]) == (80, 60, "jpg") and len(image["phash"]) == 16
    assert audio["media_ext"] == "flac" and audio["sample_rate"] == 16000 and audio["duration_s"] == pytest.approx(1.5)
    assert audio["media_bytes"][:4] == b"fLaC"  # WAV normalized to FLAC
    assert video["num_frames"] == 10 and video["fps"] == 10 and video["video_codec"] == "h264"
    assert video["audio_codec"] == "aac" and video["audio_duration_s"] == pytest.approx(1.0, abs=0.1)
    assert all(len(r["sha256"]) == 64 for r in kept)


def test_clean_remuxes_flac_from_other_containers_and_names_matroska_mkv():
    kept, rejected = run(
        CleanStage(), sample("audio", media=flac_in_matroska(), n=0), sample("video", media=matroska_video(), n=1)
    )
    assert rejected == []
    audio, video = kept
    assert audio["media_bytes"][:4] == b"fLaC" and audio["duration_s"] == pytest.approx(2.0)
    assert video["media_ext"] == "mkv" and video["num_frames"] == 40


@pytest.mark.parametrize(
    "fmt,times,audio_s,duration",
    [
        ("mp4", [i / 30 for i in range(30)] + [1 + i / 2 for i in range(1, 9)], None, 5.0),  # variable rate
        ("matroska", [1 + i / 10 for i in range(20)], None, 2.0),  # starts one second in
        ("matroska", [i / 10 for i in range(30)], 3.3, 3.0),  # sound runs past the picture
    ],
)
def test_clean_keeps_valid_video_and_measures_it_by_timestamps(fmt, times, audio_s, duration):
    (row,), rejected = run(CleanStage(), sample("video", media=timed_video(fmt, times, audio_s)))
    assert rejected == []
    assert row["num_frames"] == len(times) and row["duration_s"] == pytest.approx(duration, abs=0.15)
    if audio_s:
        assert row["audio_duration_s"] == pytest.approx(audio_s, abs=0.05)


def test_clean_turns_unforeseen_decoder_failures_into_rejects(monkeypatch):
    import tasks.media.kinds.image

    def explode(*args, **kwargs):
        raise ZeroDivisionError("a decoder bug")

    monkeypatch.setattr(tasks.media.kinds.image, "decode_image", explode)
    _, (reject,) = run(CleanStage(), sample(media=image_bytes()))
    assert reject["reason"] == "decode:unexpected" and reject["detail"] == "ZeroDivisionError: a decoder bug"


def test_clean_normalizes_png_with_alpha_to_rgb_jpeg():
    (row,), _ = run(CleanStage(), sample("image", media=png_with_alpha()))
    assert row["media_bytes"][:3] == b"\xff\xd8\xff" and (row["width"], row["height"]) == (50, 40)


def bomb_png() -> bytes:
    out = io.BytesIO()
    Image.new("1", (9000, 9000)).save(out, format="PNG")
    return out.getvalue()


def noise_png() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((300, 200), 40).convert("RGB").save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    "modality,media,reason",
    [
        ("image", image_bytes((120, 90))[:1200], "decode:truncated"),  # cut inside the pixel data
        ("image", b"<html>404</html>", "decode:not_an_image"),
        ("audio", bytes(range(256)) * 8, "decode:corrupt"),
        ("audio", image_bytes(), "decode:no_audio_stream"),
        ("video", video_bytes()[:500], "decode:corrupt"),
        ("video", audio_bytes(), "decode:no_video_stream"),
        ("image", b"", "decode:not_an_image"),
        ("image", wide_png(), "decode:too_large_side"),  # fine to decode, but JPEG cannot hold it
        ("audio", audio_bytes(2.0, "wav")[:20_000], "decode:truncated"),  # FFmpeg alone would accept it
        ("video", matroska_video()[: int(len(matroska_video()) * 0.8)], "decode:truncated"),
        ("video", image_bytes((120, 90)), "decode:unsupported_container"),  # a JPEG where a video should be
        ("image", bomb_png(), "decode:too_many_pixels"),  # 81 Mpx in a few kB: refused before decoding
        ("image", noise_png()[: len(noise_png()) // 2], "decode:truncated"),
    ],
)
def test_clean_rejects_bad_media_with_a_reason(modality, media, reason):
    kept, (reject,) = run(CleanStage(), sample(modality, media=media))
    assert kept == [] and reject["reason"] == reason and reject["stage"] == "clean" and reject["detail"]


def test_clean_rejects_an_item_with_no_text_and_normalizes_spacing():
    kept, rejected = run(
        CleanStage(),
        sample(captions=(" \t\n", ""), media=image_bytes(), n=0),
        sample(text="  two\u00a0 words\n", media=image_bytes(), n=1),
    )
    assert [r["reason"] for r in rejected] == ["text:empty"]
    assert [t["text"] for t in rejected[0]["texts"]] == [" \t\n", ""]  # the reject keeps what it dropped
    assert [t["text"] for t in kept[0]["texts"]] == ["two words"]


def test_an_empty_or_repeated_caption_among_several_drops_only_that_text():
    captions = ("a dog on a beach", "  ", "A dog  on a beach", "a brown dog running", "sand and sea")
    (item,), rejected, dropped = run(
        CleanStage(), sample(captions=captions, media=image_bytes()), with_dropped_texts=True
    )
    assert rejected == []
    assert [t["text"] for t in item["texts"]] == ["a dog on a beach", "a brown dog running", "sand and sea"]
    assert [(d["text"], d["reason"], d["stage"]) for d in dropped] == [
        ("  ", "text:empty", "clean"),
        ("A dog  on a beach", "text:duplicate", "clean"),
    ]
    assert {d["sample_id"] for d in dropped} == {item["sample_id"]}


def test_filter_drops_short_captions_one_by_one_and_an_item_left_with_none():
    stage = FilterStage(min_caption_words=3)
    kept, rejected, dropped = run(
        stage,
        sample(captions=("dog", "a dog running on sand"), width=64, height=64, n=0),
        sample(captions=("dog", "cat"), width=64, height=64, n=1),
        with_dropped_texts=True,
    )
    assert [t["text"] for t in kept[0]["texts"]] == ["a dog running on sand"]
    assert [(d["text"], d["reason"], d["detail"]) for d in dropped] == [
        ("dog", "filter:caption_too_short", "caption_words=1")
    ]
    assert [r["reason"] for r in rejected] == ["filter:caption_too_short"] and "all 2 text(s) fail" in rejected[0][
        "detail"
    ]


def test_filter_scores_every_kept_row_and_names_the_failed_rule():
    stage = FilterStage(min_image_side=32, min_audio_s=0.5, max_audio_s=10, min_caption_words=2)
    kept, rejected = run(
        stage,
        sample("image", width=100, height=50, n=0),
        sample("image", width=100, height=20, n=1),
        sample("image", width=400, height=40, n=2),
        sample("audio", "a tone", duration_s=0.2, n=3),
        sample("audio", "a tone", duration_s=12.0, n=4),
        sample("image", "one", width=100, height=100, n=5),
    )
    assert [r["reason"] for r in rejected] == [
        "filter:image_too_small",
        "filter:extreme_aspect",
        "filter:audio_too_short",
        "filter:audio_too_long",
        "filter:caption_too_short",
    ]
    assert rejected[0]["detail"] == "min_side=20"
    assert kept[0]["scores"] == [{"name": "aspect_ratio", "value": 2.0}, {"name": "min_side", "value": 50.0}]


def test_align_checks_video_sound_against_picture():
    stage = AlignStage(require_video_audio=True, max_av_drift_s=0.25)
    kept, rejected = run(
        stage,
        sample("video", sha256="a", duration_s=2.0, audio_duration_s=1.9, n=0),
        sample("video", sha256="b", duration_s=2.0, audio_duration_s=0.5, n=1),
        sample("video", sha256="c", duration_s=2.0, n=2),
        sample("image", sha256="d", n=3),
    )
    assert [r["reason"] for r in rejected] == ["align:av_drift", "align:no_audio_track"]
    assert kept[0]["scores"][0]["name"] == "av_drift_s" and kept[0]["scores"][0]["value"] == pytest.approx(0.1)
    kept, rejected = run(AlignStage(require_video_audio=False), sample("video", sha256="a", duration_s=2.0))
    assert len(kept) == 1


def dedupe_rows():
    a, b = "a" * 64, "b" * 64
    return [
        sample(captions=("first caption", "second caption"), sha256=a, group="img/1", n=0),
        sample(text="First  caption", sha256=a, group="other/1-copy", n=1),  # same bytes under another name
        sample(text="a third caption", sha256=a, group="img/1-again", n=2),  # and a third
        sample(text="another picture", sha256=b, group="img/2", n=3),
    ]


@pytest.mark.parametrize("n_shards", [1, 3])
def test_dedupe_makes_identical_media_one_item_with_every_text_regardless_of_sharding(tmp_path, n_shards):
    rows = dedupe_rows()
    shards = write_shards(tmp_path, rows, n_shards)
    decision = decide_duplicates(shards, str(tmp_path / "decision.parquet"))
    kept, rejected, dropped = run(DedupeStage(decision_uri=decision.uri), *rows, with_dropped_texts=True)
    survivor = min(r["sample_id"] for r in rows[:3])  # the smallest sample_id of the three copies
    assert sorted(r["sample_id"] for r in rejected) == sorted(
        r["sample_id"] for r in rows[:3] if r["sample_id"] != survivor
    )
    assert {(r["reason"], r["duplicate_of"]) for r in rejected} == {("duplicate:exact", survivor)}
    item = next(r for r in kept if r["sample_id"] == survivor)
    assert sorted(t["text"].lower() for t in item["texts"]) == ["a third caption", "first caption", "second caption"]
    assert [d["reason"] for d in dropped] == ["text:duplicate"]  # "First  caption" is not repeated
    other = next(r for r in kept if r["sample_id"] == rows[3]["sample_id"])
    assert other["group_id"] == "img/2" and item["group_id"] != other["group_id"]


def test_dedupe_decision_is_the_same_for_one_or_many_shards(tmp_path):
    near = 0x8F3C_5A21_77E0_19B4
    rows = dedupe_rows() + [  # and a picture with a near copy (3 bits apart): the larger one stays
        sample(text="a harbour", sha256="c" * 64, phash=f"{near:016x}", width=64, height=48, n=4),
        sample(text="the harbour again", sha256="d" * 64, phash=f"{near ^ 0b10101:016x}", width=128, height=96, n=5),
    ]
    (tmp_path / "1").mkdir()
    (tmp_path / "3").mkdir()
    one = decide_duplicates(write_shards(tmp_path / "1", rows, 1), str(tmp_path / "d1.parquet"))
    many = decide_duplicates(write_shards(tmp_path / "3", list(reversed(rows)), 3), str(tmp_path / "d3.parquet"))
    one, many = storage.read_parquet(one.uri), storage.read_parquet(many.uri)
    assert one.equals(many) and one.num_rows == 5  # only the copies change; the other item is not listed
    near_copy = one.filter(pc.equal(one.column("sample_id"), rows[4]["sample_id"])).to_pylist()[0]
    assert near_copy["reason"] == "duplicate:near" and near_copy["duplicate_of"] == rows[5]["sample_id"]
    assert near_copy["detail"] == f"pHash 3 bits from {rows[5]['sample_id']}; kept as higher resolution"


def caption_rows():
    """Different media (distinct bytes, no pHash) under captions: two near copies of one caption from
    two sources, an unrelated caption, and 'stock photo' (with punctuation variants) on 6 items."""

    def item(text, n, source="web"):
        return {**sample(text=text, sha256=f"{n:064x}", group=f"g{n}", n=n), "source": source}

    return [
        item("A brown dog runs along the beach at sunset with a red ball", 0, "coco"),
        item("a brown dog runs along the beach at sunset with a red ball and a stick", 1),
        item("Two people ride bicycles through a busy city street at night", 2),
        *(item("Stock photo!" if n % 2 else "stock photo", n) for n in range(3, 9)),
    ]


def test_near_identical_captions_group_their_items_drop_where_asked_and_boilerplate_is_only_flagged(tmp_path):
    rows = caption_rows()
    shards = write_shards(tmp_path, rows, 2)
    config = {"threshold": 0.7, "drop": (), "boilerplate_items": 5}
    decision = decide_duplicates(shards, str(tmp_path / "a.parquet"), DedupeConfig(captions=config))
    assert decision.report["caption_duplicates"] == {"coco": 1, "web": 1}
    assert decision.report["boilerplate"] == [{"caption": "stock photo", "items": 6}]
    kept, rejected = run(DedupeStage(decision_uri=decision.uri), *rows)
    assert rejected == []  # different pictures: grouped, not merged
    group = {r["sample_id"]: r["group_id"] for r in kept}
    assert group[rows[0]["sample_id"]] == group[rows[1]["sample_id"]] != group[rows[2]["sample_id"]]
    assert len({group[r["sample_id"]] for r in rows[3:]}) == 6  # boilerplate joins nothing

    dropping = decide_duplicates(
        shards, str(tmp_path / "b.parquet"), DedupeConfig(captions={**config, "drop": ("web",)})
    )
    kept, rejected = run(DedupeStage(decision_uri=dropping.uri), *rows)
    assert [(r["sample_id"], r["reason"], r["duplicate_of"]) for r in rejected] == [
        (rows[1]["sample_id"], "duplicate:caption", rows[0]["sample_id"])
    ]
    assert dropping.report["by_source"] == {"web:duplicate:caption": 1}


def test_split_is_8_1_1_keeps_groups_whole_and_ignores_sharding(tmp_path):
    rng = random.Random(3)
    rows = [sample(text=f"caption {i}", group=f"g{rng.randrange(400)}", n=i) for i in range(1000)]
    results = []
    for n_shards in (1, 4):
        d = tmp_path / str(n_shards)
        d.mkdir()
        out = assign_splits(write_shards(d, rows, n_shards), SplitConfig(salt="salt"), str(d / "a.parquet"))
        kept, _ = run(SplitStage(assignment_uri=out.uri), *rows)
        results.append({r["sample_id"]: r["split"] for r in kept})
        counts = {s: sum(v == s for v in results[-1].values()) for s in ("train", "val", "test")}
        largest = max(sum(r["group_id"] == g for r in rows) for g in {r["group_id"] for r in rows})
        for split, ratio in zip(("train", "val", "test"), (0.8, 0.1, 0.1)):
            assert abs(counts[split] - ratio * len(rows)) <= largest
        by_group = {}
        for r in kept:
            by_group.setdefault(r["group_id"], set()).add(r["split"])
        assert all(len(s) == 1 for s in by_group.values())
    assert results[0] == results[1]


def test_split_salt_changes_the_draw(tmp_path):
    rows = [sample(text=f"c {i}", group=f"g{i}", n=i) for i in range(200)]
    shards = write_shards(tmp_path, rows, 1)
    a = storage.read_parquet(assign_splits(shards, SplitConfig(salt="one"), str(tmp_path / "a.parquet")).uri)
    b = storage.read_parquet(assign_splits(shards, SplitConfig(salt="two"), str(tmp_path / "b.parquet")).uri)

    def splits(t):
        return dict(zip(t.column("group_id").to_pylist(), t.column("split").to_pylist()))

    assert splits(a) != splits(b)


def test_rejects_need_a_kind_in_the_reason():
    from tasks.core.schema import reject_row

    with pytest.raises(ValueError):
        reject_row(sample(), "filter", "too_small")
    assert reject_row(sample(), "filter", "filter:too_small")["reason"] == "filter:too_small"
