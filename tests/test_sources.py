"""Each dataset adapter on a miniature file in the dataset's own format, broken records included."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.recipe import RecipeError, load_recipe
from tasks.sources import SourceError, make_source


def rows_of(**source):
    return list(make_source(name="s", **source).rows())


def good(rows):
    return [r for r in rows if not r.error]


def test_coco_gathers_five_captions_and_flags_orphans(tmp_path):
    (tmp_path / "captions_train2017.json").write_text(
        json.dumps(
            {
                "licenses": [
                    {"id": 4, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/2.0/"}
                ],
                "images": [
                    {"id": 9, "file_name": "000000000009.jpg", "license": 4},
                    {"id": 25, "file_name": "000000000025.jpg"},
                ],
                "annotations": [{"id": k, "image_id": 9, "caption": f"caption {k}"} for k in range(5)]
                + [{"id": 99, "image_id": 404, "caption": "points nowhere"}],
            }
        )
    )
    rows = rows_of(kind="coco", uri=str(tmp_path / "captions_train2017.json"), media_root=str(tmp_path / "train2017"))
    assert [r.error for r in rows if r.error] == ["orphan annotation: image_id 404 is not in 'images'"]
    nine = [r for r in good(rows) if r.key == "000000000009.jpg"]
    assert len(nine) == 5 and nine[0].media == str(tmp_path / "train2017" / "000000000009.jpg")
    assert nine[0].meta["license"] == "Attribution License"
    (uncaptioned,) = [r for r in good(rows) if r.key == "000000000025.jpg"]
    assert uncaptioned.texts == []  # kept, so clean rejects it as text:empty: counted, not lost


def test_flickr30k_results_csv_and_karpathy_json(tmp_path):
    (tmp_path / "results.csv").write_text(
        "image_name| comment_number| comment\n1000092795.jpg| 0| Two young guys with shaggy hair .\n"
        "1000092795.jpg| 1| Two young , White males are outside .\n| 0| no image\n"
    )
    rows = rows_of(kind="flickr30k", uri=str(tmp_path / "results.csv"))
    assert [r.texts[0]["text"] for r in good(rows)] == [
        "Two young guys with shaggy hair .",
        "Two young , White males are outside .",
    ]
    assert [r.error for r in rows if r.error] == ["missing image_name"]
    (tmp_path / "dataset_flickr30k.json").write_text(
        json.dumps(
            {
                "dataset": "flickr30k",
                "images": [
                    {"filename": "1000092795.jpg", "split": "train", "sentences": [{"raw": "a"}, {"raw": "b"}]},
                    {"imgid": 3},
                ],
            }
        )
    )
    rows = rows_of(kind="flickr30k", uri=str(tmp_path / "dataset_flickr30k.json"))
    assert [len(r.texts) for r in good(rows)] == [2] and good(rows)[0].meta == {"karpathy_split": "train"}
    assert len([r for r in rows if r.error]) == 1


def test_url_lists_in_every_format_keep_extra_columns(tmp_path):
    (tmp_path / "cc3m.tsv").write_text(
        "a dog on a beach\thttps://example.org/dog.jpg\n\thttps://example.org/blank.jpg\nno url here\t\n"
    )
    rows = rows_of(kind="urls", uri=str(tmp_path / "cc3m.tsv"), columns=["caption", "url"])
    assert [(r.media, r.texts) for r in good(rows)] == [
        ("https://example.org/dog.jpg", [{"text": "a dog on a beach", "kind": "caption"}]),
        ("https://example.org/blank.jpg", [{"text": "", "kind": "caption"}]),
    ]  # an empty text: dropped by clean
    assert len([r for r in rows if r.error]) == 1
    pq.write_table(
        pa.table(
            {
                "URL": ["https://example.org/a.jpg", "file:///etc/passwd"],
                "TEXT": ["a cat", "x"],
                "WIDTH": [640, 1],
                "LICENSE": ["cc-by", None],
            }
        ),
        tmp_path / "laion.parquet",
    )
    rows = rows_of(kind="urls", uri=str(tmp_path / "laion.parquet"), url_col="URL", caption_col="TEXT")
    assert good(rows)[0].meta == {"WIDTH": 640, "LICENSE": "cc-by"}
    assert [r.error for r in rows if r.error] == ["not an http(s) URL: file:///etc/passwd"]


def test_llava_clotho_audiocaps_webvid(tmp_path):
    (tmp_path / "chat.json").write_text(
        json.dumps(
            [
                {
                    "id": "GCC_train_002582585",
                    "image": "GCC_train_002582585.jpg",
                    "conversations": [
                        {"from": "human", "value": "Describe the image.\n<image>"},
                        {"from": "gpt", "value": "olive oil is a healthy ingredient used liberally ."},
                    ],
                },
                {"id": "x"},
            ]
        )
    )
    rows = rows_of(kind="llava", uri=str(tmp_path / "chat.json"))
    assert good(rows)[0].texts == [{"text": "olive oil is a healthy ingredient used liberally .", "kind": "caption"}]
    assert len(rows) == 2 and rows[1].error

    (tmp_path / "clotho.csv").write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
        "Birds.wav,birds sing,a bird calls,,chirping,tweets\n"
    )
    (row,) = rows_of(kind="clotho", uri=str(tmp_path / "clotho.csv"))
    assert row.modality == "audio" and [t["text"] for t in row.texts] == [
        "birds sing",
        "a bird calls",
        "",
        "chirping",
        "tweets",
    ]

    (tmp_path / "audiocaps.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n"
        "91139,r1nicOVtvkQ,130,A woman talks nearby as water pours\n"
        "58146,UDGBjjwyaqE,later,broken start\n"
    )
    rows = rows_of(kind="audiocaps", uri=str(tmp_path / "audiocaps.csv"))
    assert (good(rows)[0].media, good(rows)[0].clip) == ("https://www.youtube.com/watch?v=r1nicOVtvkQ", (130.0, 140.0))
    assert rows[1].error == "start_time 'later' is not a time"

    (tmp_path / "webvid.csv").write_text(
        "videoid,contentUrl,duration,page_dir,name\n"
        "21179416,https://ak.picdn.net/x.mp4,PT00H00M11S,006001_006050,Aerial shot\n"
    )
    (row,) = rows_of(kind="webvid", uri=str(tmp_path / "webvid.csv"), media_root=str(tmp_path / "v"))
    assert row.media == str(tmp_path / "v" / "006001_006050" / "21179416.mp4")


def test_msrvtt_voxceleb2_howto100m_make_clips(tmp_path):
    (tmp_path / "videodatainfo.json").write_text(
        json.dumps(
            {
                "videos": [
                    {
                        "video_id": "video0",
                        "url": "https://www.youtube.com/watch?v=9lZi22qLlEo",
                        "start time": 137.72,
                        "end time": 149.44,
                        "category": 9,
                        "split": "train",
                    }
                ],
                "sentences": [{"video_id": "video0", "caption": f"a car drives {k}", "sen_id": k} for k in range(20)]
                + [{"video_id": "video9", "caption": "orphan"}],
            }
        )
    )
    rows = rows_of(kind="msrvtt", uri=str(tmp_path / "videodatainfo.json"))
    assert len(good(rows)) == 20 and good(rows)[0].clip == (137.72, 149.44)
    local = rows_of(kind="msrvtt", uri=str(tmp_path / "videodatainfo.json"), media_root=str(tmp_path / "videos"))
    assert good(local)[0].media == str(tmp_path / "videos" / "video0.mp4") and good(local)[0].clip is None

    utt = tmp_path / "txt" / "id00012" / "21Uxsk56VDQ"
    utt.mkdir(parents=True)
    (utt / "00001.txt").write_text(
        "Identity  : \tid00012\nReference : \t21Uxsk56VDQ\nOffset    : \t1\n"
        "FV Conf   : \t16.647\t(1)\n\nFRAME \tX \tY \tW \tH \n000245 \t0.531 \t0.146 \t0.156 \t0.278 \n"
        "000270 \t0.530 \t0.146 \t0.156 \t0.278 \n"
    )
    (utt / "00002.txt").write_text("Identity  : \tid00012\n")
    rows = rows_of(kind="voxceleb2", uri=str(tmp_path / "txt"))
    (clip,) = good(rows)
    assert clip.clip == (245 / 25, 271 / 25) and clip.group == "id00012" and clip.texts[0]["kind"] == "speaker"
    assert "no Identity, Reference or FRAME rows" in rows[1].error

    (tmp_path / "caption.json").write_text(
        json.dumps(
            {
                "-0Oj6SMNZG0": {"start": [1.0, 5.5], "end": [5.5, 9.0], "text": ["first we cut", "then we fold"]},
                "broken": {"start": [1], "end": [], "text": ["x"]},
            }
        )
    )
    rows = rows_of(kind="howto100m", uri=str(tmp_path / "caption.json"))
    assert [(r.clip, r.texts[0]["kind"], r.group) for r in good(rows)] == [
        ((1.0, 5.5), "subtitle", "-0Oj6SMNZG0"),
        ((5.5, 9.0), "subtitle", "-0Oj6SMNZG0"),
    ]
    assert len({r.key for r in good(rows)}) == 2 and len(rows) == 3


def test_folders_with_json_sidecars_and_webdataset_tars(tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.jpg").write_bytes(b"x")
    (tmp_path / "media" / "a.json").write_text(json.dumps({"texts": ["one", {"text": "two", "kind": "title"}]}))
    (row,) = rows_of(kind="folder", uri=str(tmp_path / "media"))
    assert row.texts == [{"text": "one", "kind": "caption"}, {"text": "two", "kind": "title"}]
    with tarfile.open(tmp_path / "shard-0.tar", "w") as tar:
        for name, data in (("k1.jpg", b"jpeg"), ("k1.txt", b"a caption"), ("k2.txt", b"no media")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rows = rows_of(kind="webdataset", uri=str(tmp_path / "shard-0.tar"))
    (ok,) = good(rows)
    assert ok.media == f"tar://k1.jpg::{tmp_path}/shard-0.tar" and ok.texts[0]["text"] == "a caption"
    from tasks.stages.collect import _extension

    assert _extension(ok.media) == "jpg" and "k2" in [r.error for r in rows if r.error][0]
    from tasks.core import storage

    assert storage.read_bytes(ok.media) == b"jpeg"


def test_a_missing_annotation_file_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        rows_of(kind="coco", uri=str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SourceError, match="is not JSON"):
        rows_of(kind="msrvtt", uri=str(tmp_path / "bad.json"))


def test_recipes_take_a_list_of_sources_and_name_the_bad_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: mix\nsources:\n  - {name: coco, kind: coco, uri: a.json}\n"
        "  - {name: cc3m, kind: urls, uri: b.tsv, url_col: url, caption_col: caption}\n"
        "network: {allow_hosts: [127.0.0.1]}\n"
    )
    recipe = load_recipe(path)
    assert [s.kind for s in recipe.all_sources] == ["coco", "urls"] and recipe.network.allow_hosts == ("127.0.0.1",)
    path.write_text("name: mix\nsources:\n  - {name: cc3m, kind: urls, uri: b.tsv, url_column: url}\n")
    with pytest.raises(RecipeError, match=r"sources\.0\.urls\.url_column: Extra inputs"):
        load_recipe(path)
    path.write_text(
        "name: mix\nsources:\n  - {name: a, kind: coco, uri: a.json}\n  - {name: a, kind: coco, uri: b.json}\n"
    )
    with pytest.raises(RecipeError, match="repeated: a"):
        load_recipe(path)
