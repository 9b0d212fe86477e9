"""Scene cuts on real photographs filmed as shots (a camera panning across each): hard cuts and a
cross-fade found where they are, a continuous pan left whole, long scenes cut in parts; subtitle cues read
as timed texts; then a build that cuts a three-shot video with a subtitle file beside it into three items
of one group, each with the cue said during it, the counts reconciled through the cut."""

from __future__ import annotations

import io
import json
from fractions import Fraction

import av
import numpy as np
import pytest

from tasks.core import storage
from tasks.media.scenes import ScenesConfig, find_scenes
from tasks.recipe import Recipe
from tasks.sources import make_source

from .helpers import build_in_process
from .realmedia import photo_video, skimage_photos, speech, write_sound

FPS = 15


@pytest.fixture(scope="module")
def shots() -> list[list[np.ndarray]]:
    """Four shots of 4 s: the camera panning across four different photographs."""
    photos = skimage_photos(("astronaut", "coffee", "chelsea", "rocket")).values()
    return [frames_of(photo_video(p, (320, 240), seconds=4.0, fps=FPS)) for p in photos]


def frames_of(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def film(frames: list[np.ndarray]) -> bytes:
    """The frames as one H.264 MP4 at 15 fps (x264 chooses its keyframes, as an encoder of footage does), with
    a person speaking as its AAC sound track."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        audio = out.add_stream("aac", rate=16000, layout="mono")
        for i, picture in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        voice = np.concatenate(list(speech(4).values()))
        write_sound(out, audio, np.resize(voice, len(frames) * 8000 // FPS), 8000)
    return buf.getvalue()


def cross_fade(a: list[np.ndarray], b: list[np.ndarray], seconds: float = 1.0) -> list[np.ndarray]:
    n = round(seconds * FPS)
    mixed = [((1 - w) * x.astype(float) + w * y.astype(float)).astype(np.uint8)
             for w, x, y in zip(np.linspace(0, 1, n), a[-n:], b[:n])]  # fmt: skip
    return a[:-n] + mixed + b[n:]


def test_hard_cuts_and_a_cross_fade_are_found_where_they_are(shots):
    """Two shots joined by a hard cut at 4 s: cut within 0.2 s of it. Joined by a 1 s cross-fade (3-4 s):
    cut inside the fade (measured at its start, 3.07 s). Three shots: three scenes."""
    config = ScenesConfig()
    hard = find_scenes(film(shots[0] + shots[1]), config)
    assert len(hard) == 2 and abs(hard[0][1] - 4.0) < 0.2 and hard[1][1] == pytest.approx(8.0, abs=0.1), hard
    faded = find_scenes(film(cross_fade(shots[0], shots[1])), config)
    assert len(faded) == 2 and 2.8 < faded[0][1] < 4.2, faded
    three = find_scenes(film(shots[0] + shots[1] + shots[2]), config)
    assert [round(e) for _, e in three] == [4, 8, 12], three


def test_a_continuous_shot_is_one_scene_and_a_long_one_is_cut_in_parts():
    """A 12 s pan across one photograph (the picture changes all along, with no cut): one scene; with
    max_scene_s 5, three equal parts of 4 s."""
    photo = skimage_photos(("rocket",))["rocket"]
    pan = photo_video(photo, (320, 240), seconds=12.0, fps=FPS)
    assert find_scenes(pan, ScenesConfig()) == [(0.0, pytest.approx(12.0, abs=0.1))]
    parts = find_scenes(pan, ScenesConfig(max_scene_s=5))
    assert [round(e - s, 1) for s, e in parts] == [4.0, 4.0, 4.0] and parts[0][0] == 0.0


def test_a_build_cuts_a_long_video_into_one_item_per_scene_of_one_group(shots, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "vlog.mp4").write_bytes(film(shots[0] + shots[1] + shots[2]))
    (folder / "vlog.srt").write_text(SRT)  # a cue in each shot, read beside the video as timed texts
    (folder / "short.mp4").write_bytes(film(shots[3]))  # 4 s: under max_scene_s, published whole
    rows = [{"media": "vlog.mp4", "modality": "video", "text": "a walk past an astronaut, a coffee and a cat"},
            {"media": "short.mp4", "modality": "video", "text": "a rocket on its launch pad"}]  # fmt: skip
    (folder / "videos.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(name="clips", kind="manifest", uri=str(folder / "videos.jsonl"))
    recipe = Recipe.model_validate(
        {"name": "t", "sources": [source.model_dump()], "split": {"ratios": [0.34, 0.33, 0.33]},
         "clean": {"video": {"scenes": {"max_scene_s": 10}}}}
    )  # fmt: skip
    layout, manifest = build_in_process([source], str(tmp_path / "out"), recipe)
    funnel = {line["stage"]: line for line in json.loads(storage.read_bytes(f"{layout.version}/stats.json"))["funnel"]}
    assert (funnel["scenes"]["in"], funnel["scenes"]["kept"], funnel["scenes"]["items"]) == (2, 2, 4)
    assert funnel["clean"]["in"] == 4 and manifest["samples"] == 4  # each scene cleaned, judged, published
    index = [r for split in ("train", "val", "test") if storage.exists(f"{layout.version}/{split}/index.parquet")
             for r in storage.read_parquet(f"{layout.version}/{split}/index.parquet").to_pylist()]  # fmt: skip
    scenes = sorted((r for r in index if r["scene_of"]), key=lambda r: r["scene_index"])
    assert [r["scene_index"] for r in scenes] == [0, 1, 2]
    assert len({r["scene_of"] for r in scenes}) == 1 and len({r["group_id"] for r in scenes}) == 1
    assert len({r["split"] for r in scenes}) == 1  # one video's scenes are never split apart
    windows = [(round(r["clip_start_s"]), round(r["clip_end_s"])) for r in scenes]
    assert windows == [(0, 4), (4, 8), (8, 12)] and all(3.8 < r["duration_s"] < 4.2 for r in scenes), scenes
    said = [(t["text"], t["start_s"], t["end_s"]) for r in scenes for t in r["texts"] if t["kind"] == "subtitle"]
    assert said == [("an astronaut in orbit", 1.0, 3.0), ("a cup of coffee", 1.0, 3.0), ("a cat looks up", 1.0, 3.5)]
    whole_video = [t for r in scenes for t in r["texts"] if t["kind"] == "caption"]
    assert len(whole_video) == 3 and all(
        "scope:video" in t["flags"] and "a walk past" in t["text"] for t in whole_video
    )
    whole = [r for r in index if not r["scene_of"]]
    assert len(whole) == 1 and whole[0]["scene_index"] is None and whole[0]["clip_start_s"] is None


def test_a_video_that_cannot_be_read_is_a_reject_and_other_items_pass_untouched():
    from tasks.stages.scenes import ScenesStage

    from .helpers import sample
    from .test_stages import run

    broken, picture = sample("video", media=b"\x00\x00\x00 ftypisom" + bytes(200), n=0), sample("image", n=1)
    kept, rejected = run(ScenesStage(every_video=True), broken, picture)
    assert [r["reason"] for r in rejected] == ["decode:corrupt"]
    assert [r["sample_id"] for r in kept] == [picture["sample_id"]] and kept[0]["scene_index"] is None


VTT = """WEBVTT
Kind: captions
Language: en

00:00.500 --> 00:02.000
<v Guide>an astronaut <b>floats</b>

00:01.900 --> 00:03.000 align:start
an astronaut floats
above the earth

1:00:00.000 --> 1:00:01.250
an hour in
"""

SRT = """1
00:00:01,000 --> 00:00:03,000
{\\an8}an astronaut in orbit

2
00:00:05,000 --> 00:00:07,000
a cup of coffee

3
00:00:09,000 --> 00:00:11,500
a cat looks up
"""


def test_subtitle_cues_keep_their_times_and_an_items_cues_are_joined_once():
    from tasks.media.subtitles import cues, join_cues, timed_texts

    # tags gone; the line a rolling caption repeats from the cue before, once
    found = cues(VTT)
    assert found == [(0.5, 2.0, "an astronaut floats"), (1.9, 3.0, "above the earth"), (3600, 3601.25, "an hour in")]
    assert [c[:2] for c in cues(SRT)] == [(1.0, 3.0), (5.0, 7.0), (9.0, 11.5)]
    assert cues(SRT)[0][2] == "an astronaut in orbit"
    window = timed_texts(SRT, window=(4.0, 10.0))  # a window of the video: the cues in it, from its start
    assert [(t["start_s"], t["end_s"], t["text"]) for t in window] == [
        (1.0, 3.0, "a cup of coffee"),
        (5.0, 7.5, "a cat looks up"),
    ]
    caption = {"text": "a day in orbit", "kind": "caption", "source": "s"}
    joined = join_cues([*({**t, "source": "s"} for t in timed_texts(SRT)), caption])
    assert joined[1] == caption and len(joined) == 2
    assert joined[0]["text"] == "an astronaut in orbit a cup of coffee a cat looks up"
    assert (joined[0]["start_s"], joined[0]["end_s"], joined[0]["kind"]) == (1.0, 11.5, "subtitle")
