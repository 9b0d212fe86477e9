"""The temporal, speech, long-text and interleaved formats: each adapter on a miniature in its public
format (field names as the released files have them) with broken records; a build of three families
at once; and the document item, read back with webdataset in reading order."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.core import storage
from tasks.core.schema import make_sample_id
from tasks.recipe import Recipe, load_recipe
from tasks.sources import SourceError, make_source

from .helpers import build_in_process, real_photos


def published(layout, manifest) -> list[dict]:
    return [
        r for split in manifest["splits"] for r in pq.read_table(f"{layout.version}/{split}/index.parquet").to_pylist()
    ]


def rows_of(**source):
    return list(make_source(name="s", **source).rows())


def good(rows):
    return [r for r in rows if not r.error]


def errors(rows):
    return [r.error for r in rows if r.error]


# -- video with temporal annotations -------------------------------------------------------------------


def test_activitynet_captions_makes_one_clip_per_window_grouped_by_video(tmp_path):
    (tmp_path / "train.json").write_text(
        json.dumps(
            {
                "v_QOlSCBRmfWY": {
                    "duration": 82.73,
                    "timestamps": [[0.83, 19.86], [17.37, 60.81], [56.26, 79.42]],
                    "sentences": ["A young woman is seen standing.", " She then begins dancing.", "She ends."],
                },
                "v_ehGHCYKzyZ8": {"duration": 61.72, "timestamps": [[20.0, 10.0]], "sentences": ["backwards"]},
                "v_broken": {"duration": 5, "timestamps": [[0, 1]], "sentences": []},
            }
        )
    )
    rows = rows_of(kind="activitynet", uri=str(tmp_path / "train.json"), media_root=str(tmp_path / "videos"))
    assert [r.clip for r in good(rows)] == [(0.83, 19.86), (17.37, 60.81), (56.26, 79.42)]
    assert {r.group for r in good(rows)} == {"v_QOlSCBRmfWY"}
    assert good(rows)[0].media == str(tmp_path / "videos" / "v_QOlSCBRmfWY.mp4")
    assert good(rows)[0].key == "v_QOlSCBRmfWY.mp4@0.83-19.86"
    assert errors(rows) == [
        "v_ehGHCYKzyZ8: bad window 20.0-10.0",
        "v_broken: timestamps and sentences are not lists of one length",
    ]
    assert rows[3].texts == [{"text": "backwards", "kind": "caption"}]  # a broken window keeps its text
    remote = rows_of(kind="activitynet", uri=str(tmp_path / "train.json"))
    assert good(remote)[0].media == "https://www.youtube.com/watch?v=QOlSCBRmfWY"


def test_kinetics_csv_local_layout_and_youtube_windows(tmp_path):
    (tmp_path / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "abseiling,--07WQ2iBlw,1,11,train,0\n"
        "playing guitar,-3B32lodo2M,59,69,train,0\n"
        "abseiling,-3B32lodo2M,100,90,train,0\n"
        ",zzz,0,10,test,0\n"
    )
    rows = rows_of(kind="kinetics", uri=str(tmp_path / "train.csv"), media_root=str(tmp_path / "clips"))
    assert [r.key for r in good(rows)] == [
        "train/--07WQ2iBlw_000001_000011.mp4",
        "train/-3B32lodo2M_000059_000069.mp4",
        "test/zzz_000000_000010.mp4",
    ]
    assert good(rows)[1].texts == [{"text": "playing guitar", "kind": "label"}] and good(rows)[1].clip is None
    assert good(rows)[2].texts == []  # the test split is unlabelled: clean rejects it as text:empty
    assert errors(rows) == ["-3B32lodo2M: bad window 100.0-90.0"]
    by_label = rows_of(
        kind="kinetics", uri=str(tmp_path / "train.csv"), media_root=str(tmp_path), path="{label}/{youtube_id}.mp4"
    )
    assert good(by_label)[1].key == "playing guitar/-3B32lodo2M.mp4"
    remote = good(rows_of(kind="kinetics", uri=str(tmp_path / "train.csv")))
    assert remote[0].clip == (1.0, 11.0) and remote[0].media.endswith("v=--07WQ2iBlw")
    assert remote[0].group == "--07WQ2iBlw"


def test_internvid_jsonl_timestamps_and_bad_lines(tmp_path):
    lines = [
        {"YoutubeID": "-0-_IbiomCA", "Start_timestamp": "00:07:33.689", "End_timestamp": "00:07:51.085",
         "Caption": "a man is playing a guitar", "Aesthetic_Score": 4.6, "UMT_Score": 0.41},
        {"YoutubeID": "-0-_IbiomCA", "Start_timestamp": "00:08:00.000", "End_timestamp": "00:07:00.000",
         "Caption": "time runs back"},
    ]  # fmt: skip
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n" + json.dumps({"Caption": "no id"}) + "\n"
    (tmp_path / "InternVid-10M-FLT.jsonl").write_text(text)
    rows = rows_of(kind="internvid", uri=str(tmp_path / "InternVid-10M-FLT.jsonl"))
    (clip,) = good(rows)
    assert clip.clip == pytest.approx((453.689, 471.085)) and clip.group == "-0-_IbiomCA"
    assert clip.meta == {"Aesthetic_Score": 4.6, "UMT_Score": 0.41}
    assert clip.texts == [{"text": "a man is playing a guitar", "kind": "caption"}]
    assert len(errors(rows)) == 3 and "not JSON" in errors(rows)[1] and errors(rows)[2] == "record without a YoutubeID"


# -- speech and sound ----------------------------------------------------------------------------------


def librispeech_tree(root, flac: bytes):
    chapter = root / "LibriSpeech" / "dev-clean" / "1272" / "128104"
    chapter.mkdir(parents=True)
    (chapter / "1272-128104.trans.txt").write_text(
        "1272-128104-0000 MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES\n"
        "1272-128104-0001 NOR IS MISTER QUILTER'S MANNER LESS INTERESTING\n"
        "1272-128104-0002\n"
    )
    for utt in ("0000", "0001"):
        (chapter / f"1272-128104-{utt}.flac").write_bytes(flac)
    other = root / "LibriSpeech" / "dev-clean" / "1462" / "170138"
    other.mkdir(parents=True)
    (other / "1462-170138.trans.txt").write_text("1462-170138-0000 HE HAD WRITTEN A NUMBER OF BOOKS HIMSELF\n")
    (root / "LibriSpeech" / "SPEAKERS.TXT").write_text(
        ";ID  |SEX| SUBSET           |MINUTES| NAME\n1272 | M | dev-clean        | 8.08 | John Rose\n"
    )
    return root / "LibriSpeech" / "dev-clean"


def real_librispeech(root):
    """The LibriSpeech miniature with three real recordings of speech as its utterances (16 kHz FLAC)."""
    from .realmedia import encode_sound, speech

    subset = librispeech_tree(root, b"")
    paths = [subset / "1272/128104/1272-128104-0000.flac", subset / "1272/128104/1272-128104-0001.flac",
             subset / "1462/170138/1462-170138-0000.flac"]  # fmt: skip
    for path, samples in zip(paths, speech(3).values()):
        path.write_bytes(encode_sound(samples, "flac", "flac", 16000))
    return subset


def test_librispeech_transcripts_speakers_and_missing_lines(tmp_path):
    root = librispeech_tree(tmp_path, b"flac")
    rows = rows_of(kind="librispeech", uri=str(root))
    assert [r.key for r in good(rows)] == [
        "1272/128104/1272-128104-0000.flac",
        "1272/128104/1272-128104-0001.flac",
        "1462/170138/1462-170138-0000.flac",
    ]
    first = good(rows)[0]
    assert first.texts == [{"text": "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES", "kind": "transcript"}]
    assert first.media == str(root / "1272/128104/1272-128104-0000.flac") and first.group == "speaker:1272"
    assert first.meta == {"speaker": "1272", "chapter": "128104", "sex": "M", "subset": "dev-clean"}
    assert len(errors(rows)) == 1 and "bad line '1272-128104-0002'" in errors(rows)[0]
    with pytest.raises(SourceError, match="no <speaker>-<chapter>.trans.txt"):
        rows_of(kind="librispeech", uri=str(tmp_path / "nothing"))


def test_wavcaps_subsets_name_their_fields_differently(tmp_path):
    subsets = {
        "fsd_final.json": [
            {"id": "180913", "file_name": "UK Mello.wav", "href": "/people/Tempouser/sounds/180913/",
             "tags": ["Standard"], "author": "Tempouser", "duration": 3.9, "caption": "A person is speaking."},
        ],
        "bbc_final.json": [{"id": "07070240", "category": "['Animals']", "caption": "Cows mooing.", "duration": 47.2}],
        "as_final.json": [{"id": "Yb0RFKhbpFJA.wav", "caption": "Wind blows.", "audio": "wav_path", "duration": 10.0},
                          {"caption": "no id"}],
    }  # fmt: skip
    found = {}
    for name, data in subsets.items():
        (tmp_path / name).write_text(json.dumps({"num_captions_per_audio": 1, "data": data}))
        found[name] = rows_of(kind="wavcaps", uri=str(tmp_path / name), media_root=str(tmp_path / "audio"))
    assert [r.key for rows in found.values() for r in good(rows)] == [
        "180913.flac",
        "07070240.flac",
        "Yb0RFKhbpFJA.flac",
    ]
    assert good(found["fsd_final.json"])[0].meta["author"] == "Tempouser"
    assert good(found["bbc_final.json"])[0].texts == [{"text": "Cows mooing.", "kind": "caption"}]
    assert errors(found["as_final.json"]) == ["record without an 'id'"]
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(SourceError, match="no 'data' list"):
        rows_of(kind="wavcaps", uri=str(tmp_path / "bad.json"))


# -- images with long or structured text ---------------------------------------------------------------


def test_conversations_answers_are_texts_and_prompts_their_own_kind(tmp_path):
    records = [
        {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
         "conversations": [{"from": "human", "value": "<image>\nWhat do you see happening in this image?"},
                           {"from": "gpt", "value": "The image shows a bus at a stop."},
                           {"from": "human", "value": "What colour is it?"},
                           {"from": "gpt", "value": "It is white and red."}]},
        {"id": "sharegpt4v_1", "image": "coco/train2017/000000033471.jpg",
         "conversations": [{"from": "human", "value": "Describe the image in detail.\n<image>"},
                           {"from": "gpt", "value": "A long and detailed description of a city bus."}]},
        {"id": "text-only", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"id": "allava", "image": "allava_vflan/images/1.jpeg",
         "conversations": [{"from": "human", "value": "<image>\nQuestion?"}]},
    ]  # fmt: skip
    (tmp_path / "llava_instruct_150k.json").write_text(json.dumps(records))
    rows = rows_of(kind="conversations", uri=str(tmp_path / "llava_instruct_150k.json"))
    bus = [r for r in good(rows) if r.key == "coco/train2017/000000033471.jpg"]
    assert [(t["kind"], t["text"]) for t in bus[0].texts] == [
        ("prompt", "What do you see happening in this image?"),
        ("answer", "The image shows a bus at a stop."),
        ("prompt", "What colour is it?"),
        ("answer", "It is white and red."),
    ]
    assert bus[1].texts[0] == {"text": "Describe the image in detail.", "kind": "prompt"}
    assert errors(rows) == ["record without an 'image' (a text-only conversation)"]
    (unanswered,) = [r for r in good(rows) if r.key.startswith("allava")]
    assert unanswered.texts == []  # a prompt alone describes nothing: clean rejects it as text:empty


def visual_genome_files(tmp_path, width=512, height=512):
    (tmp_path / "VG_100K").mkdir()
    (tmp_path / "VG_100K" / "1.jpg").write_bytes(real_photos()["astronaut-0"])  # 512 x 512
    images = [
        {"image_id": 1, "url": "https://cs.stanford.edu/people/rak248/VG_100K/1.jpg", "width": width,
         "height": height, "coco_id": None, "flickr_id": None},
        {"width": 10},
    ]  # fmt: skip
    regions = [
        {"id": 1, "regions": [
            {"region_id": 1382, "width": 120, "height": 140, "image_id": 1, "phrase": "the astronaut's smiling face",
             "y": 60, "x": 170},
            {"region_id": 1383, "width": 8, "height": 6, "image_id": 1, "phrase": "a tiny spot", "y": 0, "x": 0},
            {"region_id": 1384, "width": 90, "height": 150, "image_id": 1, "phrase": "a flag on the sleeve",
             "y": 400, "x": 450},
            {"region_id": 1385, "width": "wide", "height": 70, "image_id": 1, "phrase": "broken box", "y": 1, "x": 1},
        ]},
    ]  # fmt: skip
    (tmp_path / "image_data.json").write_text(json.dumps(images))
    (tmp_path / "region_descriptions.json").write_text(json.dumps(regions))
    return str(tmp_path / "image_data.json")


def test_visual_genome_regions_as_texts_and_as_crops_grouped_with_the_image(tmp_path):
    uri = visual_genome_files(tmp_path)
    plain = rows_of(kind="visual_genome", uri=uri)
    assert good(plain)[0].media == "https://cs.stanford.edu/people/rak248/VG_100K/1.jpg"
    assert [t["kind"] for t in good(plain)[0].texts] == ["region"] * 4
    assert errors(plain) == ["image without an image_id and url"]
    rows = rows_of(kind="visual_genome", uri=uri, media_root=str(tmp_path), region_crops=True)
    image, *crops = good(rows)
    assert image.key == "VG_100K/1.jpg" and image.media == str(tmp_path / "VG_100K" / "1.jpg")
    assert [(c.key, c.region, c.group) for c in crops] == [
        ("VG_100K/1.jpg#region=1382", (170, 60, 120, 140), "VG_100K/1.jpg"),
        ("VG_100K/1.jpg#region=1384", (450, 400, 90, 150), "VG_100K/1.jpg"),
    ]
    assert crops[0].texts == [{"text": "the astronaut's smiling face", "kind": "caption"}]
    assert errors(rows) == [
        "region 1383: 8x6 is under min_region_side 32",
        "region 1385: bad box (1, 1, 'wide', 70)",
        "image without an image_id and url",
    ]
    with pytest.raises(ValueError, match="region_crops cuts regions from local images"):
        rows_of(kind="visual_genome", uri=uri, region_crops=True)


def test_visual_genome_is_read_from_either_file(tmp_path):
    """Given region_descriptions.json (the file with the texts, as COCO's source is given its captions), the
    images' file is found beside it; without it, the error says where it was looked for."""
    uri = visual_genome_files(tmp_path)
    from_images = rows_of(kind="visual_genome", uri=uri, media_root=str(tmp_path))
    from_regions = rows_of(
        kind="visual_genome", uri=str(tmp_path / "region_descriptions.json"), media_root=str(tmp_path)
    )
    assert [(r.key, r.media, r.texts, r.error) for r in from_regions] == [
        (r.key, r.media, r.texts, r.error) for r in from_images
    ]
    assert len(good(from_regions)) == 1 and len(good(from_regions)[0].texts) == 4
    (tmp_path / "image_data.json").unlink()
    with pytest.raises(
        SourceError, match=r"holds region descriptions; the images' file .* not beside it at .*image_data.json"
    ):
        rows_of(kind="visual_genome", uri=str(tmp_path / "region_descriptions.json"))


def test_kinetics_clips_are_found_in_the_official_and_the_label_folder_layouts(tmp_path):
    (tmp_path / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nabseiling,--07WQ2iBlw,1,11,train\n"
        "playing guitar,-3B32lodo2M,59,69,train\n"
    )
    official = tmp_path / "official" / "train"
    official.mkdir(parents=True)
    (official / "--07WQ2iBlw_000001_000011.mp4").write_bytes(b"x")
    by_label = tmp_path / "torchvision" / "train" / "playing guitar"
    by_label.mkdir(parents=True)
    (by_label / "-3B32lodo2M_000059_000069.mp4").write_bytes(b"x")
    for root, found in (("official", "train/--07WQ2iBlw_000001_000011.mp4"),
                        ("torchvision", "train/playing guitar/-3B32lodo2M_000059_000069.mp4")):  # fmt: skip
        rows = good(rows_of(kind="kinetics", uri=str(tmp_path / "train.csv"), media_root=str(tmp_path / root)))
        assert [r.media for r in rows if storage.exists(r.media)] == [str(tmp_path / root / found)]


def test_visual_genome_crops_are_cut_from_the_picture_in_a_build(tmp_path):
    uri = visual_genome_files(tmp_path)
    source = make_source(name="vg", kind="visual_genome", uri=uri, media_root=str(tmp_path), region_crops=True)
    layout, manifest = build_in_process([source], str(tmp_path / "out"), workers=1)
    index = published(layout, manifest)
    sizes = sorted((r["width"], r["height"]) for r in index)
    # the region over the edges (450 + 90 > 512) is cut at them; one group keeps them together
    assert sizes == [(62, 112), (120, 140), (512, 512)]
    assert len({r["group_id"] for r in index}) == 1
    assert sorted(r["region"] for r in index if r["region"]) == [[170, 60, 120, 140], [450, 400, 90, 150]]


# -- interleaved documents -----------------------------------------------------------------------------


def obelics_parquet(path, documents: list[list[tuple[str, str]]], urls: list[str | None]):
    """OBELICS rows: `texts` and `images` aligned position by position, None where the other holds."""
    rows = []
    for parts, url in zip(documents, urls):
        rows.append(
            {
                "images": [value if kind == "image" else None for kind, value in parts],
                "texts": [value if kind == "text" else None for kind, value in parts],
                "metadata": json.dumps([None] * len(parts)),
                "general_metadata": json.dumps({"url": url, "warc_filename": "crawl.warc.gz"}) if url else None,
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_obelics_rows_become_a_document_and_its_pictures(tmp_path):
    obelics_parquet(
        tmp_path / "train-00000.parquet",
        [
            [("text", "A first passage."), ("image", "https://a.example/1.jpg"), ("text", "Then more.")],
            [("image", "https://a.example/1.jpg"), ("text", "Shown again.")],
        ],
        ["https://page.example/a", None],
    )
    bad = {"texts": ["x", None], "images": [None, None], "metadata": "[]", "general_metadata": None}
    pq.write_table(pa.Table.from_pylist([bad]), tmp_path / "train-00001.parquet")
    rows = rows_of(kind="obelics", uri=str(tmp_path))
    picture, first, again, second = good(rows)
    assert (picture.modality, picture.part_of, picture.group) == ("image", "https://page.example/a", first.key)
    assert first.modality == "document" and first.key == "https://page.example/a"
    assert first.segments == [("text", 0), ("image", "https://a.example/1.jpg"), ("text", 1)]
    assert [t["kind"] for t in first.texts] == ["passage", "passage"] and first.meta["warc_filename"]
    assert again.key == "https://a.example/1.jpg" and second.key == "row-1"  # no url: the row's position
    assert errors(rows) == ["position 1 holds neither a text and an image"]


def test_mmc4_places_each_picture_before_its_sentence(tmp_path):
    doc = {
        "url": "https://blog.example/post",
        "text_list": ["Our trip began here.", "The lake was calm.", "We left at dawn."],
        "image_info": [
            {
                "image_name": "b.jpg",
                "raw_url": "https://img.example/b.jpg",
                "matched_text_index": 1,
                "matched_sim": 0.3,
            },
            {
                "image_name": "a.jpg",
                "raw_url": "https://img.example/a.jpg",
                "matched_text_index": 0,
                "matched_sim": 0.2,
            },
            {
                "image_name": "c.jpg",
                "raw_url": "https://img.example/c.jpg",
                "matched_text_index": 1,
                "matched_sim": 0.2,
            },
        ],
        "similarity_matrix": [[0.2, 0.1, 0.1]],
    }
    broken = {"url": "https://blog.example/x", "text_list": ["one"], "image_info": [{"matched_text_index": 7}]}
    (tmp_path / "docs_shard_0_v2.jsonl").write_text(json.dumps(doc) + "\n" + json.dumps(broken) + "\n")
    rows = rows_of(kind="mmc4", uri=str(tmp_path / "docs_shard_0_v2.jsonl"), media_root=str(tmp_path / "images"))
    *pictures, document = good(rows)
    assert [p.key for p in pictures] == ["a.jpg", "b.jpg", "c.jpg"]
    assert pictures[0].media == str(tmp_path / "images" / "a.jpg")
    assert document.segments == [
        ("image", "a.jpg"), ("text", 0), ("image", "b.jpg"), ("image", "c.jpg"), ("text", 1), ("text", 2)
    ]  # fmt: skip
    assert len(errors(rows)) == 1 and "matched_text_index" in errors(rows)[0]
    remote = good(rows_of(kind="mmc4", uri=str(tmp_path / "docs_shard_0_v2.jsonl")))
    assert remote[0].media == "https://img.example/a.jpg"


def jpeg(data: bytes, quality: int) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).save(out, format="JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="module")
def three_families(tmp_path_factory):
    """ActivityNet windows cut from a local video, LibriSpeech, OBELICS documents and a COCO source that
    holds one of the documents' pictures (re-encoded), built into one version."""
    from .realmedia import photo_video, skimage_photos, speech

    tmp = tmp_path_factory.mktemp("families")
    photos = real_photos()
    # ActivityNet: one video, two annotated windows
    (tmp / "anet" / "videos").mkdir(parents=True)
    # a real photograph panned over, a keyframe a second (the copy of a window starts at one)
    track = np.concatenate(list(speech(2).values()))
    panned = photo_video(skimage_photos(("astronaut",))["astronaut"], (160, 120), 6.0, 10, track, keyframe_every=10)
    (tmp / "anet" / "videos" / "v_abc.mp4").write_bytes(panned)
    captions = {"v_abc": {"duration": 6.0, "timestamps": [[0.0, 2.5], [3.0, 6.0]],
                          "sentences": ["A shape moves to the left.", "Then it turns around and stops."]}}  # fmt: skip
    (tmp / "anet" / "train.json").write_text(json.dumps(captions))
    speech_root = real_librispeech(tmp)
    pics = obelics_corpus(tmp / "web", photos)
    # COCO: the same coffee photo, re-encoded, with captions of its own
    (tmp / "coco" / "train2017").mkdir(parents=True)
    (tmp / "coco" / "train2017" / "000000000139.jpg").write_bytes(jpeg(photos["coffee-0"], 80))
    coco = {
        "images": [{"id": 139, "file_name": "000000000139.jpg"}],
        "annotations": [{"id": 1, "image_id": 139, "caption": "A cup of coffee on a saucer."}],
    }
    (tmp / "coco" / "captions_train2017.json").write_text(json.dumps(coco))
    sources = [
        make_source(name="anet", kind="activitynet", uri=str(tmp / "anet/train.json"),
                    media_root=str(tmp / "anet/videos")),
        make_source(name="libri", kind="librispeech", uri=str(speech_root)),
        make_source(name="web", kind="obelics", uri=str(pics / "obelics.parquet")),
        make_source(name="coco", kind="coco", uri=str(tmp / "coco/captions_train2017.json"),
                    media_root=str(tmp / "coco/train2017")),
    ]  # fmt: skip
    layout, manifest = build_in_process(sources, str(tmp / "out"), workers=2)
    return layout, manifest, photos


def obelics_corpus(pics, photos):
    """OBELICS documents over real photographs: the coffee photo in two documents, a broken picture in
    one, a document with nothing left, one with one picture, one too short. Pictures beside the Parquet."""
    pics.mkdir(parents=True)
    for name in ("coffee", "astronaut", "rocket", "retina", "hubble_deep_field"):
        (pics / f"{name}.jpg").write_bytes(photos[f"{name}-0"])
    (pics / "broken.jpg").write_bytes(photos["chelsea-0"][:2000])
    passage = "This page talks about {} at some length, with many words to read."
    documents = [
        [("text", passage.format("coffee")), ("image", "coffee.jpg"), ("text", passage.format("space")),
         ("image", "astronaut.jpg")],
        [("image", "coffee.jpg"), ("text", passage.format("mornings")), ("image", "broken.jpg"),
         ("text", passage.format("rockets")), ("image", "rocket.jpg")],
        [("text", passage.format("nothing")), ("image", "missing.jpg")],
        [("image", "retina.jpg"), ("text", passage.format("eyes"))],
        [("text", "Too short."), ("image", "hubble_deep_field.jpg")],
    ]  # fmt: skip
    urls = ["https://x.example/a", "https://x.example/b", None, "https://x.example/d", "https://x.example/e"]
    obelics_parquet(pics / "obelics.parquet", documents, urls)
    return pics


def test_three_families_build_one_version(three_families):
    layout, manifest, _ = three_families
    index = published(layout, manifest)
    by_source = {}
    for row in index:
        by_source.setdefault(row["source"], []).append(row)
    clips = sorted(by_source["anet"], key=lambda r: r["clip_start_s"])
    assert [(r["clip_start_s"], r["clip_end_s"]) for r in clips] == [(0.0, 2.5), (3.0, 6.0)]
    assert len({r["group_id"] for r in clips}) == 1 and len({r["split"] for r in clips}) == 1
    assert [r["duration_s"] for r in clips] == [2.5, 3.0]  # cut to their windows
    speech_rows = by_source["libri"]
    assert sorted(r["texts"][0]["kind"] for r in speech_rows) == ["transcript"] * 3
    speakers = {}
    for row in speech_rows:
        speakers.setdefault(json.loads(row["meta"])["speaker"], set()).add(row["split"])
    assert {k: len(v) for k, v in speakers.items()} == {"1272": 1, "1462": 1}  # a speaker in one split
    assert [r["modality"] for r in by_source["web"]].count("document") == 3


def test_a_picture_in_two_documents_and_a_coco_source_is_one_item(three_families):
    layout, manifest, _ = three_families
    index = published(layout, manifest)
    coffee = [r for r in index if r["modality"] == "image"]
    assert len(coffee) == 1  # the pictures only documents show are published inside them
    (kept,) = coffee
    assert {t["text"] for t in kept["texts"]} == {"A cup of coffee on a saucer."}
    documents = [r for r in index if r["modality"] == "document" and len(r["segments"]) > 2]
    shown = [[s["image"] for s in d["segments"] if s["image"]] for d in documents]
    assert shown[0][0] == shown[1][0] == kept["sample_id"]  # both documents name the one item
    assert {r["group_id"] for r in documents + coffee} == {kept["group_id"]}  # never split apart
    rejects = pq.read_table(f"{layout.version}/rejects.parquet").to_pylist()
    copies = [r for r in rejects if r["reason"].startswith("duplicate:")]
    assert [r["duplicate_of"] for r in copies] == [kept["sample_id"]]


def test_a_broken_picture_drops_its_segment_and_an_empty_document_goes(three_families):
    layout, manifest, _ = three_families
    web = make_sample_id("web", "broken.jpg")
    dropped = pq.read_table(f"{layout.version}/dropped_texts.parquet").to_pylist()
    (segment,) = [d for d in dropped if d["kind"] == "image"]
    assert segment["text"] == web and segment["reason"].startswith("decode:")
    assert segment["sample_id"] == make_sample_id("web", "https://x.example/b")
    rejects = {r["sample_id"]: r for r in pq.read_table(f"{layout.version}/rejects.parquet").to_pylist()}
    assert rejects[web]["reason"].startswith("decode:")  # the picture itself is a reject as well
    assert rejects[make_sample_id("web", "row-2")]["reason"] == "document:no_images"
    short = rejects[make_sample_id("web", "https://x.example/e")]
    assert (short["reason"], short["detail"]) == ("filter:short_document", "2 words < 10")
    # its picture, shown by no other document and captioned by no source, goes with it
    assert rejects[make_sample_id("web", "hubble_deep_field.jpg")]["reason"] == "document:orphan_image"
    assert rejects[make_sample_id("web", "missing.jpg")]["reason"] == "collect:missing_media"
    stats = json.loads(storage.read_bytes(f"{layout.version}/stats.json"))
    # coffee shown twice, astronaut, rocket, retina: 4 pictures in 5 segments
    assert stats["documents"] == {"documents": 3, "pictures": 4, "picture_segments": 5, "passages": 5}
    (documents,) = [line for line in stats["funnel"] if line["stage"] == "documents"]
    assert documents["in"] == documents["kept"] + documents["rejected"] and documents["rejected"] == 3


def test_webdataset_reads_each_document_in_order_with_every_picture(three_families):
    import webdataset as wds

    layout, manifest, photos = three_families
    tars = [f"{layout.version}/{t}" for s in manifest["splits"].values() for t in s["tars"] if "/document-" in t]
    found = {}
    for sample in wds.WebDataset(tars, shardshuffle=False, empty_check=False):
        meta = json.loads(sample["json"])
        order = []
        for segment in meta["segments"]:
            if segment["text"] is not None:
                order.append(segment["text"].split(" talks about ")[1].split(" ")[0])
            else:
                picture = Image.open(io.BytesIO(sample[segment["member"]]))
                picture.load()
                order.append(picture.size)
        found[meta["sample_id"]] = order
        assert sample["txt"].decode().count("This page talks about") == len([s for s in meta["segments"] if s["text"]])
    assert found == expected_documents(photos)


def expected_documents(photos) -> dict[str, list]:
    """Each published document in reading order: a passage by its topic, a picture by its size."""
    coffee, astronaut, rocket, retina = (
        Image.open(io.BytesIO(photos[f"{n}-0"])).size for n in ("coffee", "astronaut", "rocket", "retina")
    )
    return {
        make_sample_id("web", "https://x.example/a"): ["coffee", coffee, "space", astronaut],
        make_sample_id("web", "https://x.example/b"): [coffee, "mornings", "rockets", rocket],
        make_sample_id("web", "https://x.example/d"): [retina, "eyes"],
    }


def test_hugging_face_datasets_loads_documents_with_their_pictures(three_families, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    layout, _, photos = three_families
    found = {}
    for rows in datasets.load_dataset(layout.version, "document", cache_dir=str(tmp_path / "hf")).values():
        for row in rows:
            order = []
            for segment in row["json"]["segments"]:
                if segment["text"] is not None:
                    order.append(segment["text"].split(" talks about ")[1].split(" ")[0])
                else:
                    order.append(row[segment["member"]].size)  # decoded by datasets as a PIL image
            found[row["__key__"]] = order
            # a document with fewer pictures than another has no such member
            assert sum(row[m] is not None for m in row if m[0].isdigit()) == len(
                {s["image"] for s in row["json"]["segments"] if s["image"]}
            )
    assert found == expected_documents(photos)


def test_example_recipes_load():
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parents[1] / "recipes" / "examples").glob("*.yaml"))
    assert len(examples) >= 4
    kinds = {source.kind for path in examples for source in load_recipe(str(path)).all_sources}
    assert {"activitynet", "kinetics", "internvid", "librispeech", "wavcaps", "conversations", "visual_genome",
            "obelics", "mmc4"} <= kinds  # fmt: skip
    assert Recipe  # the examples are recipes as a user writes them


def test_croissant_describes_the_documents_pictures_and_iterates_the_index(three_families):
    import mlcroissant

    layout, manifest, _ = three_families
    metadata = json.loads(storage.read_bytes(f"{layout.version}/croissant.json"))
    (pictures,) = [d for d in metadata["distribution"] if d["@id"].startswith("document-")]
    assert pictures["@id"] == "document-jpg" and pictures["includes"] == "*.jpg"
    records = list(mlcroissant.Dataset(jsonld=f"{layout.version}/croissant.json").records(record_set="index"))
    assert len(records) == manifest["samples"] == len(published(layout, manifest))


@pytest.mark.e2e
def test_documents_and_speech_read_from_object_storage_build_through_prefect_and_ray(
    tmp_path, s3, prefect_api, ray_cluster
):
    """The annotation files and media on S3 (moto), the build through the Prefect flow on the two-node
    Ray cluster, the version on S3: the same documents, in order, every picture decodable."""
    import webdataset as wds

    from flows.build import build_dataset

    photos = real_photos()
    obelics_corpus(tmp_path / "raw" / "web", photos)
    real_librispeech(tmp_path / "raw")
    raw = f"{s3}/raw-{tmp_path.name}"
    for path in (tmp_path / "raw").rglob("*"):
        if path.is_file():
            storage.write_bytes(f"{raw}/{path.relative_to(tmp_path / 'raw').as_posix()}", path.read_bytes())
    recipe = tmp_path / "docs.yaml"
    recipe.write_text(
        "name: docs\nsources:\n"
        f"  - {{name: web, kind: obelics, uri: {raw}/web/obelics.parquet}}\n"
        f"  - {{name: libri, kind: librispeech, uri: {raw}/LibriSpeech/dev-clean}}\n"
    )
    result = build_dataset(str(recipe), "2026-11-01", f"{s3}/datasets")
    version, manifest = result["version"], result["manifest"]
    assert version.startswith("s3://") and manifest["samples"] == 3 + 3  # documents a, b, d; 3 utterances
    local = tmp_path / "version"
    tars = []
    for split in manifest["splits"].values():
        for name in (t for t in split["tars"] if "/document-" in t):
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            (local / name).write_bytes(storage.read_bytes(f"{version}/{name}"))
            tars.append(str(local / name))
    found = {}
    for sample in wds.WebDataset(tars, shardshuffle=False, empty_check=False):
        meta = json.loads(sample["json"])
        found[meta["sample_id"]] = [
            s["text"].split(" talks about ")[1].split(" ")[0]
            if s["text"] is not None
            else Image.open(io.BytesIO(sample[s["member"]])).size
            for s in meta["segments"]
        ]
    assert found == expected_documents(photos)


def test_a_source_whose_media_are_mostly_missing_says_where_they_were_sought_and_what_is_there(tmp_path):
    from tasks.build.pipeline import LocalRunner, Plan, execute

    (tmp_path / "media" / "clips_v2").mkdir(parents=True)
    (tmp_path / "media" / "found.jpg").write_bytes(real_photos()["coffee-0"])
    rows = [{"media": "found.jpg", "modality": "image", "text": "a cup of coffee"}]
    rows += [{"media": f"train/{i}.jpg", "modality": "image", "text": f"picture {i}"} for i in range(3)]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(
        name="pics", kind="manifest", uri=str(tmp_path / "list.jsonl"), media_root=str(tmp_path / "media")
    )
    recipe = Recipe(name="pics", source=source)
    runner = LocalRunner()
    execute(Plan(recipe, storage.Layout(str(tmp_path / "out"), "pics", "p", recipe.fingerprint())), runner)
    [line] = [m for m in runner.messages if "missing" in m]
    assert line.startswith("source pics: 3 of 4 media are missing (collect:missing_media); looked for ")
    assert f"{tmp_path}/media/train/0.jpg" in line and line.endswith(f"{tmp_path}/media holds: clips_v2, found.jpg")
