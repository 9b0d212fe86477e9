"""Video cleaning on real pictures and speech: facts, the sound track through the audio path (scores and
log-mel), thumbnails spread over the clip, the downscale / frame-rate preset, and the video filters;
then a whole build publishing all of it beside each clip."""

from __future__ import annotations

import io
import json
import tarfile
from fractions import Fraction

import av
import imagehash
import numpy as np
import pytest
from PIL import Image

from tasks.core import storage
from tasks.media import MediaError
from tasks.media.audio import AudioPreset
from tasks.media.video import Thumbnails, VideoPreset, decode_video
from tasks.recipe import Recipe
from tasks.sources import make_source
from tasks.stages.clean import CleanStage
from tasks.stages.filter import FilterStage

from .helpers import build_in_process, sample, timed_video
from .realmedia import photo_video, skimage_photos, speech
from .test_stages import run

MEL = (("hop_length", 256), ("n_fft", 1024), ("n_mels", 80))


@pytest.fixture(scope="module")
def clip() -> bytes:
    """Six seconds panning over a real photograph at 640 x 480, 30 fps, a woman speaking as its sound."""
    photo = skimage_photos(("astronaut",))["astronaut"]
    return photo_video(photo, (640, 480), seconds=6.0, fps=30, track=next(iter(speech(1, min_seconds=6.0).values())))


def frames_of(data: bytes) -> list[tuple[float, Image.Image]]:
    with av.open(io.BytesIO(data)) as container:
        return [(frame.time, frame.to_image()) for frame in container.decode(video=0)]


def test_the_sound_track_is_measured_and_gets_a_log_mel_like_an_audio_clip(clip):
    video = decode_video(clip, VideoPreset(), AudioPreset(sample_rate=16000, log_mel=MEL))
    assert video.data is clip  # nothing asked to re-encode it
    assert video.scores["rms_dbfs"] > -40 and 0 <= video.scores["silence_ratio"] < 0.5
    assert video.scores["clipping_ratio"] < 0.001
    mel = np.load(io.BytesIO(video.mel))
    assert mel.dtype == np.float16 and mel.shape[0] == 80
    # frames at 16 kHz: one per hop over the track, centred (+1)
    assert mel.shape[1] == video.mel_params["frames"] == pytest.approx(video.audio_duration_s * 16000 / 256 + 1, abs=2)
    assert video.mel_params["sample_rate"] == 16000
    assert len(video.fingerprint) > 20  # speech long enough for Chromaprint


def test_thumbnails_are_spread_over_the_clip_and_show_its_frames(clip):
    video = decode_video(clip, VideoPreset(keyframes=8, keyframe_side=112))
    times = [t for t, _ in video.thumbnails]
    assert len(times) == 8 and times == sorted(times) and times[0] == 0.0 and times[-1] >= 0.75 * video.duration_s
    gaps = np.diff(times)
    assert gaps.max() <= 1.5 * gaps.min()
    decoded = dict(frames_of(clip))
    for t, jpeg in video.thumbnails:
        thumb = Image.open(io.BytesIO(jpeg))
        assert (
            thumb.format == "JPEG"
            and min(thumb.size) == 112
            and thumb.size[0] / thumb.size[1] == pytest.approx(4 / 3, abs=0.02)
        )
        nearest = min(decoded, key=lambda s: abs(s - t))
        assert abs(nearest - t) < 1e-3  # a real frame's time, not a guess
        # the thumbnail is that frame (the pan moves: a frame a second away looks different)
        assert imagehash.phash(thumb) - imagehash.phash(decoded[nearest]) <= 6


def test_thumbnails_of_a_long_clip_keep_memory_bounded():
    picker = Thumbnails(count=5, side=16)
    frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
    for i in range(25 * 600):  # ten minutes at 25 fps
        picker.feed(frame, i / 25)
        assert len(picker.held) < 10
    times = [t for t, _ in picker.result()]
    assert len(times) == 5 and times[0] == 0 and times[-1] > 500


def test_the_preset_downscales_and_thins_frames_keeping_time_and_sound(clip):
    video = decode_video(clip, VideoPreset(short_side=240, max_fps=15))
    assert (video.ext, video.video_codec, video.audio_codec) == ("mp4", "h264", "aac")
    assert (video.width, video.height) == (320, 240) and video.num_frames == 90
    assert video.source == {
        "width": 640,
        "height": 480,
        "fps": 30.0,
        "video_codec": "h264",
        "audio_codec": "aac",
        "bytes": len(clip),
    }
    again = decode_video(video.data)  # the published file, read back as a new input
    assert (again.width, again.height, again.num_frames) == (320, 240, 90)
    assert again.fps == pytest.approx(15, abs=0.1) and again.duration_s == pytest.approx(6.0, abs=0.01)
    assert again.audio_duration_s == pytest.approx(video.audio_duration_s, abs=0.05)
    # the same picture at each time: first and middle frames match the source's (pan position kept)
    ours, theirs = dict(frames_of(video.data)), dict(frames_of(clip))
    for t in (0.0, 3.0):
        assert (
            imagehash.phash(ours[min(ours, key=lambda s: abs(s - t))])
            - imagehash.phash(theirs[min(theirs, key=lambda s: abs(s - t))])
            <= 6
        )


def test_a_video_within_the_preset_is_published_as_it_came():
    small = timed_video("mp4", [i / 10 for i in range(20)])  # 64 x 48, 10 fps
    assert decode_video(small, VideoPreset(short_side=240, max_fps=15)).data is small


def test_variable_frame_rate_and_late_starts_keep_their_times_through_a_reencode():
    times = [1 + i / 30 for i in range(30)] + [2 + i / 2 for i in range(1, 7)]  # starts at 1 s, 30 then 2 fps
    source = decode_video(timed_video("matroska", times, audio_seconds=5.0))
    video = decode_video(timed_video("matroska", times, audio_seconds=5.0), VideoPreset(short_side=32))
    assert video.num_frames == len(times) and (video.width, video.height) == (42, 32)
    again = decode_video(video.data)
    # (the last frame's length is the nominal rate's, which MP4 and Matroska state differently)
    assert again.duration_s == pytest.approx(source.duration_s, abs=0.1)
    got = [t for t, _ in frames_of(video.data)]
    assert np.diff(got) == pytest.approx(np.diff(times), abs=0.002)


def test_a_video_without_sound_has_no_sound_facts_and_still_gets_thumbnails():
    video = decode_video(
        timed_video("mp4", [i / 10 for i in range(30)]),
        VideoPreset(keyframes=3),
        AudioPreset(sample_rate=16000, log_mel=MEL),
    )
    assert video.audio_codec is None and video.scores == {} and video.mel is None and video.fingerprint == []
    assert len(video.thumbnails) == 3


def empty_stream_video(kind: str) -> bytes:
    """A Matroska file whose video stream has no frames (with a sound track), or whose sound stream has
    none (MP4 would leave an empty stream out altogether)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        picture = out.add_stream("libx264", rate=10)
        picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream("aac", rate=16000, layout="mono")
        if kind == "no_video_frames":
            samples = np.zeros((1, 1024), np.float32)
            for i in range(16):
                chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, i * 1024
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
        else:
            for i in range(20):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, 10)
                out.mux(picture.encode(frame))
            out.mux(picture.encode(None))
    return buf.getvalue()


def test_zero_length_streams():
    with pytest.raises(MediaError) as e:
        decode_video(empty_stream_video("no_video_frames"))
    assert e.value.code == "empty"
    silent = decode_video(empty_stream_video("no_audio_frames"), VideoPreset(short_side=32), AudioPreset(log_mel=MEL))
    assert silent.num_frames == 20 and silent.mel is None and silent.scores == {}
    assert silent.audio_duration_s is silent.audio_codec is silent.sample_rate is None  # judged as no sound


def test_video_filters_judge_side_frame_rate_and_duration():
    slideshow = timed_video("mp4", [i * 2.0 for i in range(5)])  # one frame every two seconds
    kept, rejected = run(
        CleanStage(),
        sample("video", media=timed_video("mp4", [i / 10 for i in range(20)]), n=0),
        sample("video", media=slideshow, n=1),
    )
    assert not rejected
    kept, rejected = run(FilterStage(min_video_side=50), *kept)
    assert [r["reason"] for r in rejected] == ["filter:video_too_small", "filter:video_too_small"]
    kept, rejected = run(CleanStage(), sample("video", media=slideshow, n=1))
    kept, rejected = run(FilterStage(), *kept)
    assert [r["reason"] for r in rejected] == ["filter:low_frame_rate"] and "fps=0.5" in rejected[0]["detail"]


def slideshow(photos: list[np.ndarray], size: tuple[int, int], seconds_each: float, fps: int) -> bytes:
    """An MP4 showing each photograph still for `seconds_each`, joined by hard cuts (a slideshow)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        n = 0
        for photo in photos:
            still = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo), format="rgb24").reformat(*size)
            for _ in range(round(seconds_each * fps)):
                frame = still.reformat(format="yuv420p")
                frame.pts, frame.time_base, n = n, Fraction(1, fps), n + 1
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def test_a_pan_moves_and_a_slideshow_of_the_same_photographs_does_not():
    """Real photographs: the camera panning across one (its content travels half the view's width in the
    clip: 0.5 / 4 s = 0.125 widths a second across, 0.094 down: 0.156 in all), against the same photographs shown
    still, two seconds each, with hard cuts between them (the cuts are not motion)."""
    photos = list(skimage_photos(("astronaut", "coffee", "chelsea")).values())
    moving = VideoPreset(motion=True)
    pans = [decode_video(photo_video(p, (320, 240), seconds=4.0, fps=15), moving).scores["motion"] for p in photos]
    still = decode_video(slideshow(photos, (320, 240), seconds_each=2.0, fps=15), moving).scores["motion"]
    assert still < 0.01 and all(0.1 < m < 0.2 for m in pans), (still, pans)  # measured 0.13-0.16
    assert "motion" not in decode_video(photo_video(photos[0], (320, 240))).scores  # off unless asked

    clips = [sample("video", media=photo_video(photos[0], (320, 240), seconds=4.0, fps=15), n=0)]
    clips.append(sample("video", media=slideshow(photos, (320, 240), seconds_each=2.0, fps=15), n=1))
    cleaned, _ = run(CleanStage(video={"motion": True}), *clips)
    kept, rejected = run(FilterStage(min_motion=0.02), *cleaned)
    assert [r["sample_id"] for r in kept] == [clips[0]["sample_id"]]
    assert rejected[0]["reason"] == "filter:static_video" and "motion=" in rejected[0]["detail"]
    kept, rejected = run(FilterStage(max_motion=0.05), *cleaned)
    assert [r["reason"] for r in rejected] == ["filter:too_much_motion"] and len(kept) == 1
    source = {"name": "s", "kind": "manifest", "uri": "x.jsonl"}
    with pytest.raises(ValueError, match="filter.min_motion judges the motion score: set clean.video.motion"):
        Recipe.model_validate({"name": "t", "source": source, "filter": {"min_motion": 0.02}})


def test_a_build_publishes_each_clip_with_its_thumbnails_and_log_mel(clip, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    storage.write_bytes(str(folder / "pan.mp4"), clip)
    storage.write_bytes(
        str(folder / "slideshow.mp4"), timed_video("mp4", [i / 5 for i in range(15)], audio_seconds=3.0)
    )
    (folder / "captions.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in (
                {"media": "pan.mp4", "modality": "video", "text": "a camera pans across an astronaut"},
                {"media": "slideshow.mp4", "modality": "video", "text": "grey frames fade over a hum"},
            )
        )
    )
    source = make_source(name="clips", kind="manifest", uri=str(folder / "captions.jsonl"))
    recipe = Recipe.model_validate(
        {
            "name": "t",
            "sources": [source.model_dump()],
            "split": {"ratios": [1.0, 0.0, 0.0]},
            "clean": {"audio": {"sample_rate": 16000}, "video": {"short_side": 240, "max_fps": 15}},
            "features": {"log_mel": {"n_mels": 64}, "keyframes": {"count": 4, "short_side": 96}},
        }
    )
    layout, manifest = build_in_process([source], str(tmp_path / "out"), recipe)
    members = {}
    for tar_name in manifest["splits"]["train"]["tars"]:
        with tarfile.open(storage.join(layout.version, tar_name)) as tar:
            members.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
    keys = {name.split(".")[0] for name in members}
    assert len(keys) == 2
    for key in keys:
        meta = json.loads(members[f"{key}.json"])
        suffixes = sorted(name.split(".", 1)[1] for name in members if name.startswith(key + "."))
        assert suffixes == ["json", *[f"keyframe{i}.jpg" for i in range(4)], "mel.npy", "mp4", "txt"]
        features = json.loads(meta["features"])
        assert features["keyframes"]["count"] == 4 and features["log_mel"]["n_mels"] == 64
        assert np.load(io.BytesIO(members[f"{key}.mel.npy"])).shape == (64, features["log_mel"]["frames"])
        assert min(Image.open(io.BytesIO(members[f"{key}.keyframe0.jpg"])).size) == min(96, meta["height"])
        published = decode_video(members[f"{key}.mp4"])
        assert (published.width, published.height) == (meta["width"], meta["height"])
        if "pan" in meta["source_uri"]:
            assert (meta["width"], meta["height"]) == (320, 240) and features["reencoded_from"]["width"] == 640
        else:
            assert members[f"{key}.mp4"] == (folder / "slideshow.mp4").read_bytes()  # small: as it came
