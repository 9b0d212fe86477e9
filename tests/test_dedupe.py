"""Near-duplicates on real media: planted copies of photographs (re-encodes, half-size, 2% crops,
PNG/WebP, brighter, a caption burnt in), of speech (MP3, 16 kHz FLAC, trims) and of videos (another
resolution) are found and become one item; distinct photographs, recordings and clips never merge."""

from __future__ import annotations

import io
import itertools
import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from tasks.core import storage
from tasks.core.groups import UnionFind
from tasks.recipe import Recipe
from tasks.similar import hamming_pairs
from tasks.sources import make_source

from .helpers import build_in_process
from .realmedia import SOUND_EDITS, photo_video, skimage_photos, speech

DISTINCT = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "camera",
    "moon",
    "coins",
    "page",
    "text",
)


def _save(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _crop(image: Image.Image, fraction: float) -> Image.Image:
    dx, dy = int(image.width * fraction), int(image.height * fraction)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def _caption_burnt_in(image: Image.Image) -> Image.Image:
    image = image.copy()
    ImageDraw.Draw(image).text((8, image.height - 18), "(c) stock", fill=(255, 255, 255))
    return image


EDITS = {
    "jpeg70": lambda im: _save(im, quality=70),
    "jpeg35": lambda im: _save(im, quality=35),
    "half": lambda im: _save(im.resize((im.width // 2, im.height // 2)), quality=90),
    "crop2": lambda im: _save(_crop(im, 0.02), quality=90),
    "png": lambda im: _save(im, "PNG"),
    "webp": lambda im: _save(im, "WEBP", quality=80),
    "brighter": lambda im: _save(ImageEnhance.Brightness(im).enhance(1.2), quality=90),
    "overlay": lambda im: _save(_caption_burnt_in(im), quality=90),
}


def photographs() -> dict[str, Image.Image]:
    """48 distinct pictures: 12 real photographs, each also turned by 90, 180, 270 degrees."""
    from skimage import data

    pictures = {}
    for name in DISTINCT:
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        for turn in range(4):
            pictures[f"{name}-{90 * turn}"] = photo.rotate(90 * turn, expand=True)
    return pictures


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A build over the distinct photographs and a planted copy of each edit for 12 of them."""
    folder = tmp_path_factory.mktemp("planted")
    pictures = photographs()
    rows, family = [], {}
    originals = {}
    for name, picture in pictures.items():
        media = f"{name}.jpg"
        storage.write_bytes(str(folder / media), _save(picture, quality=92))
        originals[name] = Image.open(folder / media).convert("RGB")  # copies are edits of the published file
        rows.append({"media": media, "modality": "image", "text": f"the original {name}"})
        family[media] = name
    for name in (f"{n}-0" for n in DISTINCT):
        for edit, make in EDITS.items():
            media = f"{name}.{edit}.img"
            storage.write_bytes(str(folder / media), make(originals[name]))
            rows.append({"media": media, "modality": "image", "text": f"{edit} copy of {name}"})
            family[media] = name
    recordings = speech(6, min_seconds=5.0)
    for name, samples in recordings.items():
        for edit in ("wav", "mp3", "flac16k", "trim50"):
            media = f"{name}.{edit}.snd"
            storage.write_bytes(str(folder / media), SOUND_EDITS[edit](samples))
            rows.append({"media": media, "modality": "audio", "text": f"{edit} of the prompt {name}"})
            family[media] = name
    for (name, photo), track in zip(skimage_photos(("astronaut", "coffee", "chelsea")).items(), recordings.values()):
        for copy, size, crf in (("original", (320, 240), 23), ("small", (160, 120), 35)):
            media = f"clip-{name}.{copy}.mp4"
            storage.write_bytes(str(folder / media), photo_video(photo, size, track=track, crf=crf))
            rows.append({"media": media, "modality": "video", "text": f"{copy} clip of {name}"})
            family[media] = f"clip-{name}"
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(name="photos", kind="manifest", uri=str(folder / "captions.jsonl"))
    layout, manifest = build_in_process([source], str(folder / "out"), Recipe(name="t", sources=(source,)))
    index = published_items(layout, manifest)
    rejects = pq.read_table(storage.join(layout.version, "rejects.parquet")).to_pylist()
    return {"family": family, "index": index, "rejects": rejects, "rows": rows}


def published_items(layout, manifest) -> list[dict]:
    """Every index row of a version, all splits."""
    return [
        row
        for split in manifest["splits"]
        for row in pq.read_table(storage.join(layout.version, f"{split}/index.parquet")).to_pylist()
    ]


def _media(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def test_every_planted_copy_is_found_and_no_two_distinct_items_merge(planted):
    family = planted["family"]
    published = {_media(r["source_uri"]): r for r in planted["index"]}
    # one item per picture: every one of the 48 distinct pictures survives, no copy does
    assert sorted(family[m] for m in published) == sorted(set(family.values()))
    copies = {_media(r["source_uri"]): r for r in planted["rejects"]}
    assert len(copies) == len(DISTINCT) * len(EDITS) + 6 * 3 + 3
    by_id = {r["sample_id"]: _media(r["source_uri"]) for r in planted["index"]}
    expected = {
        "image": {"duplicate:near", "duplicate:exact"},
        "audio": {"duplicate:audio"},
        "video": {"duplicate:video"},
    }
    for media, reject in copies.items():
        assert reject["reason"] in expected[reject["modality"]], (media, reject["reason"], reject["detail"])
        assert family[by_id[reject["duplicate_of"]]] == family[media], f"{media} merged into another item"
        assert reject["reason"] == "duplicate:exact" or reject["detail"].split()[0] in (
            "pHash",
            "Chromaprint",
            "keyframe",
        )


def test_the_kept_item_is_the_largest_and_carries_every_copys_text(planted):
    for item in planted["index"]:
        name = item["source_uri"].rsplit("/", 1)[-1].split(".")[0]
        texts = sorted(t["text"] for t in item["texts"])
        if item["modality"] == "audio":  # every copy's text, whichever copy is longest
            assert texts == sorted(f"{edit} of the prompt {name}" for edit in ("wav", "mp3", "flac16k", "trim50"))
        elif item["modality"] == "video":  # the larger clip stays
            assert texts == [f"original clip of {name[5:]}", f"small clip of {name[5:]}"]
            assert (item["width"], item["height"]) == (320, 240)
        elif name.endswith("-0"):  # a planted family: 8 captions, on the full-size picture
            assert texts == sorted([f"the original {name}"] + [f"{e} copy of {name}" for e in EDITS])
            assert (item["width"], item["height"]) == photographs()[name].size
        else:
            assert texts == [f"the original {name}"]


def test_hamming_pairs_find_what_a_full_comparison_finds():
    rng = random.Random(7)
    hashes = [rng.getrandbits(64) for _ in range(1500)]
    for h in list(hashes[:300]):
        for bit in rng.sample(range(64), rng.randint(0, 10)):
            h ^= 1 << bit
        hashes.append(h)
    hashes += [hashes[5]] * 40  # a flood of one hash (blank images): collapsed, not a 40-clique
    ids = [f"{i:05d}" for i in range(len(hashes))]
    found = hamming_pairs(ids, hashes, radius=8)
    assert len(found) < 400
    assert all(bin(hashes[int(a)] ^ hashes[int(b)]).count("1") == d <= 8 for a, b, d in found)

    def clusters(pairs):
        union = UnionFind()
        for a, b in pairs:
            union.union(a, b)
        return {i: union.find(i) for i in ids}

    brute = [(a, b) for (a, x), (b, y) in itertools.combinations(zip(ids, hashes), 2) if bin(x ^ y).count("1") <= 8]
    assert clusters([(a, b) for a, b, _ in found]) == clusters(brute)


def _photo_source(
    folder,
    names: list[str],
    pictures: dict,
    copies: dict[str, str] | None = None,
    sounds: dict[str, bytes] | None = None,
):
    """A manifest source over some of the photographs (and half-size copies: media name -> original),
    and sounds (media name -> bytes)."""
    rows = []
    for media, data in (sounds or {}).items():
        storage.write_bytes(str(folder / media), data)
        rows.append({"media": media, "modality": "audio", "text": f"the recording {media}"})
    for name in names:
        storage.write_bytes(str(folder / f"{name}.jpg"), _save(pictures[name], quality=92))
        rows.append({"media": f"{name}.jpg", "modality": "image", "text": f"the photo {name}"})
    for media, name in (copies or {}).items():
        storage.write_bytes(str(folder / media), EDITS["half"](pictures[name]))
        rows.append({"media": media, "modality": "image", "text": f"a smaller {name}"})
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return make_source(name="photos", kind="manifest", uri=str(folder / "captions.jsonl"))


def _effective(root: str) -> set[tuple[str, str]]:
    """What a dataset holds over all its versions: every published (partition, item), less those withdrawn."""
    held, withdrawn = set(), set()
    versions = storage.join(root, "t", "versions")
    for partition in storage.list_files(versions):
        if partition.endswith("/manifest.json"):
            version = storage.join(versions, partition.rsplit("/", 1)[0])
            manifest = storage.read_json(storage.join(version, "manifest.json"))
            for split in manifest["splits"].values():
                index = pq.read_table(storage.join(version, split["index"]))
                held |= set(zip(index.column("partition").to_pylist(), index.column("sample_id").to_pylist()))
            gone = pq.read_table(storage.join(version, "withdrawn.parquet"))
            withdrawn |= set(zip(gone.column("partition").to_pylist(), gone.column("sample_id").to_pylist()))
    return held - withdrawn


def test_a_second_partition_of_the_same_source_publishes_nothing(tmp_path):
    pictures = photographs()
    names = sorted(pictures)[:6]
    recording = next(iter(speech(1, min_seconds=5.0).values()))
    source = _photo_source(tmp_path / "src", names, pictures, sounds={"speech.wav": SOUND_EDITS["wav"](recording)})
    root = str(tmp_path / "out")
    _, first = build_in_process([source], root, partition="2026-01-01")
    assert first["samples"] == 7
    again = _photo_source(
        tmp_path / "src2",
        names,
        pictures,
        copies={"smaller.jpg": names[0]},
        sounds={"speech.mp3": SOUND_EDITS["mp3"](recording)},
    )
    layout, second = build_in_process([again], root, partition="2026-01-02")
    assert second["samples"] == 0
    rejects = pq.read_table(storage.join(layout.version, "rejects.parquet")).to_pylist()
    # the half-size copy and the MP3 of the recording too
    assert {r["reason"] for r in rejects} == {"duplicate:published"} and len(rejects) == 8
    assert all("published in partition 2026-01-01" in r["detail"] for r in rejects)


def test_a_backfill_gives_what_building_in_order_gives(tmp_path):
    pictures = photographs()
    names = sorted(pictures)
    older = {"names": names[:5], "copies": {"later-copy.jpg": names[6]}}  # a copy of what the newer one holds
    newer = {"names": names[3:8], "copies": {}}  # names[3:5] are in both

    def build(order: list[str], root: str) -> set[str]:
        for partition in order:
            spec = older if partition == "2026-01-01" else newer
            source = _photo_source(tmp_path / f"src-{partition}", spec["names"], pictures, spec["copies"])
            build_in_process([source], root, partition=partition)
        return _effective(root)

    in_order = build(["2026-01-01", "2026-01-02"], str(tmp_path / "in-order"))
    backfilled = build(["2026-01-02", "2026-01-01"], str(tmp_path / "backfilled"))
    assert in_order == backfilled
    assert len(in_order) == 8  # names[0:8], each once, whichever partition built first
    withdrawn = pq.read_table(str(tmp_path / "backfilled/t/versions/2026-01-01/withdrawn.parquet")).to_pylist()
    assert {w["partition"] for w in withdrawn} == {"2026-01-02"} and len(withdrawn) == 3


def test_a_crash_while_adding_to_the_index_leaves_the_previous_index_whole(tmp_path, monkeypatch):
    from tasks.published import index as published_index

    pictures = photographs()
    root = str(tmp_path / "out")
    build_in_process([_photo_source(tmp_path / "a", sorted(pictures)[:3], pictures)], root, partition="2026-01-01")
    index = published_index.PublishedIndex(root, "t")
    before = index.current()

    def crash(uri, data):
        raise OSError("killed while committing")

    monkeypatch.setattr(storage, "create_exclusive", crash)
    with pytest.raises(OSError):
        build_in_process([_photo_source(tmp_path / "b", sorted(pictures)[3:6], pictures)], root, partition="2026-01-02")
    assert index.current() == before  # the part was written; the index does not list it
    assert index.items(except_partition="x").num_rows == 3
    monkeypatch.undo()
    build_in_process([_photo_source(tmp_path / "b", sorted(pictures)[3:6], pictures)], root, partition="2026-01-02")
    assert index.current()["generation"] == before["generation"] + 1
    assert index.items(except_partition="x").num_rows == 6


def test_videos_of_different_pictures_with_one_sound_track_are_both_published_in_one_group(tmp_path):
    """A shared sound track (stock music, a dub) is not a duplicate picture: both clips stay, in one group."""
    track = next(iter(speech(1, min_seconds=5.0).values()))
    rows = []
    for name, photo in skimage_photos(("astronaut", "coffee")).items():
        storage.write_bytes(str(tmp_path / f"{name}.mp4"), photo_video(photo, (320, 240), track=track))
        rows.append({"media": f"{name}.mp4", "modality": "video", "text": f"a camera pans across the {name}"})
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(name="clips", kind="manifest", uri=str(tmp_path / "captions.jsonl"))
    layout, manifest = build_in_process([source], str(tmp_path / "out"), Recipe(name="t", sources=(source,)))
    assert manifest["samples"] == 2 and manifest["rejected"] == 0
    index = published_items(layout, manifest)
    assert len({r["group_id"] for r in index}) == 1 and len({r["split"] for r in index}) == 1
    stats = storage.read_json(storage.join(layout.version, "stats.json"))
    assert stats["dedupe"]["grouped_not_merged"] == {"related:soundtrack": 1}


def test_silence_is_no_evidence_of_one_sound(tmp_path):
    """Two silent clips of different lengths, and two videos of different pictures whose sound is one short
    beep padded with silence: none merged, the videos not even grouped; the sounds were compared by bytes."""
    import numpy as np

    from .realmedia import encode_sound

    beep = (8000 * np.sin(2 * np.pi * 1000 * np.arange(1600) / 8000)).astype(np.int16)  # 0.2 s at 8 kHz
    padded = np.concatenate([beep, np.zeros(8000 * 5, np.int16)])
    rows = []
    for seconds in (5, 6):
        storage.write_bytes(
            str(tmp_path / f"quiet{seconds}.wav"),
            encode_sound(np.zeros(8000 * seconds, np.int16), "wav", "pcm_s16le", 8000),
        )
        rows.append(
            {"media": f"quiet{seconds}.wav", "modality": "audio", "text": f"{seconds} seconds of nothing at all"}
        )
    for name, photo in skimage_photos(("astronaut", "coffee")).items():
        storage.write_bytes(str(tmp_path / f"{name}.mp4"), photo_video(photo, (320, 240), track=padded))
        rows.append({"media": f"{name}.mp4", "modality": "video", "text": f"a beep, then a pan across the {name}"})
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(name="clips", kind="manifest", uri=str(tmp_path / "captions.jsonl"))
    recipe = Recipe(name="t", sources=(source,), filter={"max_silence_ratio": 1.0})
    layout, manifest = build_in_process([source], str(tmp_path / "out"), recipe)
    assert manifest["samples"] == 4 and manifest["rejected"] == 0
    index = published_items(layout, manifest)
    assert len({r["group_id"] for r in index}) == 4
    dedupe = storage.read_json(storage.join(layout.version, "stats.json"))["dedupe"]
    assert dedupe["compared_by_bytes_only"] == 2 and dedupe["grouped_not_merged"] == {}


def test_the_original_photograph_is_kept_over_each_of_its_edits(planted):
    """Re-encoded at 70 and 35, half size, cropped, PNG, WebP, brighter, captioned: the untouched original
    stays (ranked on thumbnails: the pHash ties it with several edits), and each copy's reject says why."""
    kept = {_media(r["source_uri"]).split(".")[0]: _media(r["source_uri"]) for r in planted["index"]}
    for name in (f"{n}-0" for n in DISTINCT):
        assert kept[name] == f"{name}.jpg", (name, kept[name])
    details = [r["detail"] for r in planted["rejects"] if r["modality"] == "image"]
    assert all("; kept as " in d for d in details)


def test_the_original_recording_is_kept_over_its_re_encodes_and_trims(tmp_path):
    """A 16 kHz WAV and its MP3, its 8 kHz FLAC and a copy with 50 ms trimmed: the WAV stays."""
    import numpy as np

    from .realmedia import encode_sound, pcm

    rows = []
    originals = {}
    rng = np.random.default_rng(5)
    for name, samples in speech(4, min_seconds=5.0).items():
        # the original at 16 kHz, with a room's faint noise up to 8 kHz (the prompts themselves are 8 kHz)
        wide = pcm(encode_sound(samples, "wav", "pcm_s16le", 16000), rate=16000)
        wide = (wide + rng.normal(0, 200, len(wide))).clip(-32768, 32767).astype(np.int16)
        edits = {
            "wav": encode_sound(wide, "wav", "pcm_s16le", 16000, source_rate=16000),
            "mp3": encode_sound(wide, "mp3", "libmp3lame", 16000, source_rate=16000),
            "flac8k": encode_sound(wide, "flac", "flac", 8000, source_rate=16000),
            "trim50": encode_sound(wide[800:], "wav", "pcm_s16le", 16000, source_rate=16000),
        }
        for edit, data in edits.items():
            storage.write_bytes(str(tmp_path / f"{name}.{edit}.snd"), data)
            rows.append({"media": f"{name}.{edit}.snd", "modality": "audio", "text": f"{edit} of {name}"})
        originals[name] = f"{name}.wav.snd"
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(name="speech", kind="manifest", uri=str(tmp_path / "captions.jsonl"))
    layout, manifest = build_in_process([source], str(tmp_path / "out"), Recipe(name="t", sources=(source,)))
    index = published_items(layout, manifest)
    assert sorted(_media(r["source_uri"]) for r in index) == sorted(originals.values())


def test_a_preferred_source_keeps_its_copy_whatever_its_size(tmp_path):
    picture = photographs()["coffee-0"]
    storage.write_bytes(str(tmp_path / "web" / "coffee.jpg"), _save(picture, quality=92))
    storage.write_bytes(str(tmp_path / "coco" / "coffee.jpg"), EDITS["half"](picture))
    sources = []
    for name in ("web", "coco"):
        (tmp_path / name / "captions.jsonl").write_text(
            json.dumps({"media": "coffee.jpg", "modality": "image", "text": f"a cup of coffee from {name}"})
        )
        sources.append(make_source(name=name, kind="manifest", uri=str(tmp_path / name / "captions.jsonl")))
    recipe = Recipe(name="t", sources=tuple(sources), dedupe={"prefer_sources": ["coco"]})
    layout, manifest = build_in_process(sources, str(tmp_path / "out"), recipe)
    index = published_items(layout, manifest)
    assert [r["source"] for r in index] == ["coco"] and len(index[0]["texts"]) == 2
    rejects = pq.read_table(storage.join(layout.version, "rejects.parquet")).to_pylist()
    assert [r["detail"].split("; ")[1] for r in rejects] == ["kept from the preferred source coco"]
    with pytest.raises(ValueError, match="dedupe.prefer_sources names no source of this recipe: flickr"):
        Recipe(name="t", sources=tuple(sources), dedupe={"prefer_sources": ["flickr"]})


def short_sounds(count: int = 24) -> dict:
    """Real short sounds of 0.1, 0.3, 1 and 2.5 s (in turn), each the loudest stretch of another spoken
    prompt (8 kHz): distinct sounds, none a part of another."""
    import numpy as np

    pieces = {}
    for k, (name, samples) in enumerate(speech(count, min_seconds=3.0).items()):
        seconds = (0.1, 0.3, 1.0, 2.5)[k % 4]
        n = int(8000 * seconds)
        start = int(np.argmax(np.convolve(samples.astype(np.float64) ** 2, np.ones(n), "valid")))
        pieces[f"{name}@{seconds}"] = samples[start : start + n]
    return pieces


def test_short_sounds_re_encoded_resampled_or_trimmed_are_found_and_distinct_ones_are_not(tmp_path):
    """Sounds of 0.1 to 2.5 s (too short for Chromaprint): an MP3, a 16 kHz FLAC and a copy with 50 ms
    trimmed off the start of each (not of a 0.1 s sound: what is left is below the ~90 ms a print needs)."""
    from .realmedia import encode_sound

    rows, family = [], {}
    for name, piece in short_sounds().items():
        copies = {
            "wav": encode_sound(piece, "wav", "pcm_s16le", 8000),
            "mp3": encode_sound(piece, "mp3", "libmp3lame", 16000),
            "flac16k": encode_sound(piece, "flac", "flac", 16000),
        }
        if len(piece) > 800:
            copies["trim"] = encode_sound(piece[400:], "wav", "pcm_s16le", 8000)
        for edit, data in copies.items():
            media = f"{name}.{edit}.snd"
            storage.write_bytes(str(tmp_path / media), data)
            rows.append({"media": media, "modality": "audio", "text": f"{edit} copy of {name}"})
            family[media] = name
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(name="sounds", kind="manifest", uri=str(tmp_path / "captions.jsonl"))
    recipe = Recipe(name="t", sources=(source,), filter={"min_audio_s": 0.05})
    layout, manifest = build_in_process([source], str(tmp_path / "out"), recipe)
    index = published_items(layout, manifest)
    published = [family[_media(r["source_uri"])] for r in index]
    assert sorted(published) == sorted(set(family.values()))  # one item per sound: copies gone, none lost
    # the 8 kHz WAV, not its copies resampled up to 16 kHz (their rate is not what they hold)
    assert all(_media(r["source_uri"]).endswith(".wav.snd") for r in index)
    rejects = pq.read_table(storage.join(layout.version, "rejects.parquet")).to_pylist()
    assert all(family[_media(r["source_uri"])] == family[next(
        _media(i["source_uri"]) for i in index if i["sample_id"] == r["duplicate_of"])] for r in rejects)  # fmt: skip
    assert {r["reason"] for r in rejects} == {"duplicate:audio"}


def test_a_cluster_of_images_is_measured_bit_by_bit_as_pair_by_pair():
    """The medoid's mean distances, computed per bit for a large cluster, are the pairwise definition's,
    to the last bit of the float (the keep order rounds them and compares)."""
    from tasks.media.kinds import Image as ImageKind

    def pairwise(members):
        return [sum(ImageKind.distance(m, o) for o in members if o is not m) / (len(members) - 1) for m in members]

    rng = np.random.default_rng(4)
    centre = int(rng.integers(0, 2**63)) * 2 + 1
    members = [
        {"sample_id": str(i), "sha256": str(i), "phash": f"{centre ^ int(rng.integers(0, 2**12)) << 50:016x}"}
        for i in range(300)
    ]
    members[5]["phash"] = f"{2**64 - 1:016x}"  # every bit set: the unsigned top bit must count
    expected = pairwise(members)
    assert ImageKind.mean_distances(members) == expected
    assert len(set(expected)) > 50 and min(expected) < expected[5]
    members[9]["phash"] = None  # one without a pHash: its distances are by bytes, pair by pair
    assert ImageKind.mean_distances(members) == pairwise(members)


def test_a_decision_over_no_shards_decides_nothing(tmp_path):
    """A partition with nothing left after clean still writes its (empty) decision and summary."""
    from tasks.stages.dedupe import decide_duplicates

    decision = decide_duplicates([], str(tmp_path / "decision.parquet"))
    assert decision.report["duplicates"] == 0 and decision.report["compared_by_bytes_only"] == 0
    assert pq.read_table(decision.uri).num_rows == 0
