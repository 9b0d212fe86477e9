"""Blocklists (tasks/stages/blocklist.py): listed URLs and hosts are never fetched, listed files never kept, and
a listed picture is found again re-encoded, while look-alikes (other photographs) stay."""

from __future__ import annotations

import hashlib
import io
import json

import imagehash
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.build.pipeline import build_locally
from tasks.core.schema import SAMPLE_SCHEMA
from tasks.recipe import Recipe
from tasks.sources import make_source
from tasks.stages.blocklist import read_entries
from tasks.stages.collect import CollectStage

from .helpers import real_photos, sample
from .web import LOOPBACK


def test_lists_are_read_from_text_csv_and_parquet_and_a_bad_line_names_its_place(tmp_path):
    (tmp_path / "list.txt").write_text(
        "# takedown request 17\nsha256:AB12\nurl:https://example.com/a/*  # a gallery\nurl:https://x.org/p#frag\n"
        "\ndomain:bad.example  # the host\n"
    )
    assert read_entries(str(tmp_path / "list.txt")) == [
        ("sha256", "AB12"), ("url", "https://example.com/a/*"), ("url", "https://x.org/p#frag"),
        ("domain", "bad.example"),
    ]  # fmt: skip
    (tmp_path / "bare.txt").write_text("00ff00ff00ff00ff\nphash:0f0f0f0f0f0f0f0f\n")
    assert read_entries(str(tmp_path / "bare.txt"), "phash") == [
        ("phash", "00ff00ff00ff00ff"),
        ("phash", "0f0f0f0f0f0f0f0f"),
    ]
    (tmp_path / "list.csv").write_text("kind,value\nurl,http://x/y.jpg\n")
    assert read_entries(str(tmp_path / "list.csv")) == [("url", "http://x/y.jpg")]
    pq.write_table(pa.table({"kind": ["domain"], "value": ["x.org"]}), tmp_path / "list.parquet")
    assert read_entries(str(tmp_path / "list.parquet")) == [("domain", "x.org")]
    (tmp_path / "bad.txt").write_text("sha256:00\nmd5:abc\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: 'md5:abc' is not `<kind>:<value>`"):
        read_entries(str(tmp_path / "bad.txt"))
    with pytest.raises(ValueError, match=r"blocklist .*bad.txt: .*bad.txt:2"):
        Recipe.model_validate(
            {
                "name": "t",
                "source": {"name": "s", "kind": "manifest", "uri": "x.jsonl"},
                "blocklist": [{"file": str(tmp_path / "bad.txt")}],
            }  # fmt: skip
        )


def _jpeg(picture: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def test_a_build_rejects_what_is_listed_by_file_prefix_and_picture_and_keeps_the_look_alikes(tmp_path):
    photos = real_photos(turns=2)  # seven photographs, each also turned: fourteen different pictures
    names = sorted(photos)
    for name in names:
        (tmp_path / f"{name}.jpg").write_bytes(photos[name])
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "held.jpg").write_bytes(_jpeg(Image.new("RGB", (90, 70), (200, 30, 30))))
    listed_picture = Image.open(io.BytesIO(photos["coffee-0"]))
    (tmp_path / "coffee-copy.jpg").write_bytes(_jpeg(listed_picture.resize((200, 150)), quality=60))
    rows = [{"media": f"{n}.jpg", "modality": "image", "text": f"a photo called {n}"} for n in names]
    rows += [{"media": "private/held.jpg", "modality": "image", "text": "a red square"},
             {"media": "coffee-copy.jpg", "modality": "image", "text": "a small cup of coffee"}]  # fmt: skip
    (tmp_path / "photos.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "hashes.txt").write_text(hashlib.sha256(photos["rocket-0"]).hexdigest() + "\n")
    (tmp_path / "takedown.txt").write_text(
        f"url:{tmp_path}/private/*\nphash:{imagehash.phash(listed_picture)}\n"
    )  # the picture by its pHash only: the listed file itself is not in the corpus, a smaller re-encode is
    recipe = Recipe.model_validate(
        {
            "name": "photos",
            "source": make_source(name="photos", kind="manifest", uri=str(tmp_path / "photos.jsonl")),
            "blocklist": [
                {"file": str(tmp_path / "hashes.txt"), "kind": "sha256"},
                {"file": str(tmp_path / "takedown.txt")},
            ],
            "dedupe": {"image_radius": None},  # the copy of coffee-0 would be its duplicate: here it is alone
        }
    )
    layout, built = build_locally(recipe, str(tmp_path / "out"), "p")
    rejects = {
        r["source_uri"].rsplit("/", 1)[-1]: r for r in pq.read_table(f"{layout.version}/rejects.parquet").to_pylist()
    }
    assert {name: r["reason"] for name, r in rejects.items()} == {
        "rocket-0.jpg": "blocked:sha256",
        "held.jpg": "blocked:url",
        "coffee-0.jpg": "blocked:phash",  # the listed picture itself
        "coffee-copy.jpg": "blocked:phash",  # re-encoded at half size and quality 60
    }
    assert rejects["rocket-0.jpg"]["stage"] == "collect" and rejects["coffee-copy.jpg"]["stage"] == "blocklist"
    assert "bits from listed" in rejects["coffee-copy.jpg"]["detail"]
    assert built["manifest"]["samples"] == len(names) - 2  # the other photographs, turned ones included, stay


def test_a_listed_url_or_host_is_never_requested(tmp_path, web):
    photo = real_photos()["chelsea-0"]
    urls = [web.add(f"/{name}.jpg", body=photo, content_type="image/jpeg") for name in ("a", "b", "c")]
    (tmp_path / "list.txt").write_text(f"url:{urls[0]}\nurl:{web.url}/b*\n")
    stage = CollectStage(**LOOPBACK, blocklist={"files": [{"file": str(tmp_path / "list.txt")}]})
    stage.setup()
    stage.start_shard("shard-00000")
    rows = [sample(n=i, source_uri=u, media_bytes=None) for i, u in enumerate(urls)]
    out = stage.process(pa.Table.from_pylist(rows, SAMPLE_SCHEMA))
    assert [r["source_uri"] for r in out.kept.to_pylist()] == [urls[2]]
    assert {r["reason"] for r in out.rejected.to_pylist()} == {"blocked:url"}
    assert web.hits == {"/c.jpg": 1}  # the blocked two were never asked for

    (tmp_path / "hosts.txt").write_text("domain:127.0.0.1\n")
    stage = CollectStage(**LOOPBACK, blocklist={"files": [{"file": str(tmp_path / "hosts.txt")}]})
    stage.setup()
    stage.start_shard("shard-00000")
    out = stage.process(pa.Table.from_pylist(rows, SAMPLE_SCHEMA))
    assert out.kept.num_rows == 0 and {r["reason"] for r in out.rejected.to_pylist()} == {"blocked:domain"}
    assert web.hits == {"/c.jpg": 1}


def test_a_listed_recording_in_fpcalcs_form_is_found_re_encoded_and_other_recordings_stay(tmp_path):
    """A Chromaprint entry as `fpcalc` prints it (base64, compressed), made here from the original WAV with the
    library fpcalc wraps; the build hears the same prompt as MP3 at 22 kHz and rejects both, not the others."""
    import chromaprint

    from .realmedia import encode_sound, speech

    prompts = speech(4)
    names = sorted(prompts)
    listed = prompts[names[0]]
    printer = chromaprint.Fingerprinter()
    printer.start(8000, 1)
    printer.feed(listed.astype("<i2").tobytes())
    entry = printer.finish().decode()
    (tmp_path / "original.wav").write_bytes(encode_sound(listed, "wav", "pcm_s16le", 8000))
    (tmp_path / "copy.mp3").write_bytes(encode_sound(listed, "mp3", "libmp3lame", 22050, bit_rate=64000))
    files = ["original.wav", "copy.mp3"]
    for name in names[1:]:
        (tmp_path / f"{name}.wav").write_bytes(encode_sound(prompts[name], "wav", "pcm_s16le", 8000))
        files.append(f"{name}.wav")
    rows = [{"media": f, "modality": "audio", "text": f"a voice prompt, file {f}"} for f in files]
    (tmp_path / "sounds.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "sounds.txt").write_text(f"chromaprint:{entry}\n")
    recipe = Recipe.model_validate(
        {
            "name": "sounds",
            "source": make_source(name="s", kind="manifest", uri=str(tmp_path / "sounds.jsonl")),
            "blocklist": [{"file": str(tmp_path / "sounds.txt")}],
            "dedupe": {"audio_max_ber": None, "audio_min_landmarks": None, "short_audio_max_db": None},
        }  # fmt: skip
    )
    layout, _ = build_locally(recipe, str(tmp_path / "out"), "p")
    rejects = {
        r["source_uri"].rsplit("/", 1)[-1]: r for r in pq.read_table(f"{layout.version}/rejects.parquet").to_pylist()
    }
    assert {n: r["reason"] for n, r in rejects.items()} == {
        "original.wav": "blocked:chromaprint",
        "copy.mp3": "blocked:chromaprint",
    }
    assert "bit error rate" in rejects["copy.mp3"]["detail"]
