"""Clean's per-item cost on real media, against the plain limit and the composition a user would
otherwise write, on the same inputs in one run (`make bench`; one process each, one core).

Images: N JPEGs (default 3,000) of COCO's size (640 px on the long side, quality 90) cropped, scaled
and mirrored at random from the photographs scikit-image ships, one in ten with an EXIF rotation.
- decode-only:          Pillow full decode of every file, nothing else: the practical limit.
- decode-only (draft):  the same with JPEG draft mode at the resize's scale: the limit for a resize path.
- pillow-limit:         Pillow decode (draft) + the same resize + JPEG encode, no measuring: the limit
                        of the work asked (what any tool that resizes must do).
- img2dataset+imagehash: img2dataset's Resizer (256 px, keep_ratio, JPEG 90) then imagehash.phash of its output.
- mmetl:                tasks/media/image.decode_image with `resize: {short_side: 256}`, JPEG 90: decode
                        (draft), orient, RGB, pHash of the whole picture, blankness, resize, encode.
- download:img2dataset-then-clean: a download resized by img2dataset's Resizer (256 px, keep_ratio, JPEG 90),
                        then decoded again by clean to measure it (a URL build before `network.resize`
                        measured in its own decode).
- download:mmetl:       tasks/fetch/resize.ImageResizer, the same options: one decode that resizes and
                        measures (clean keeps its facts).
Audio: Debian's Asterisk speech prompts (8 kHz WAV), decode + resample to 16 kHz mono + 80-band
log-mel (tasks/media/audio.decode_audio with the preset), as a real-time factor per core (seconds
of sound per second of work).
Video: N clips (default 40) of 6 s at 640 x 480, 30 fps, panning over real photographs with a real voice:
tasks/media/video.decode_video with 8 thumbnails and a 16 kHz log-mel, against PyAV decoding every
frame and sample and nothing else (the plain limit). The motion score's cost: decode_video with and
without it, against what the bare libraries add to decode-only (PyAV scaling + OpenCV's Farnebäck).
Peak RSS is read after the first half and after all of the inputs: a worker's memory must stay flat
as the input grows.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHOTOS = (
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
    "cat",
    "logo",
)
LONG_SIDE = 640


def make_images(n: int, seed: int = 0) -> list[bytes]:
    from PIL import Image
    from skimage import data

    rng = random.Random(seed)
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS if hasattr(data, name)]
    images = []
    for _ in range(n):
        photo = rng.choice(photos)
        w, h = photo.size
        cw, ch = rng.randint(w // 2, w), rng.randint(h // 2, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = photo.crop((x, y, x + cw, y + ch))
        scale = LONG_SIDE / max(crop.size)
        crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out = io.BytesIO()
        exif = Image.Exif()
        if rng.random() < 0.1:
            exif[0x0112] = 6
        crop.save(out, format="JPEG", quality=90, exif=exif)
        images.append(out.getvalue())
    return images


def run_images(method: str, n: int) -> dict:
    images = make_images(n)
    if method == "decode-only":
        from PIL import Image

        def work(data):
            Image.open(io.BytesIO(data)).load()
    elif method == "decode-only-draft":
        from PIL import Image

        def work(data):
            image = Image.open(io.BytesIO(data))
            scale = 256 / min(image.size)
            image.draft("RGB", (round(image.width * scale), round(image.height * scale)))
            image.load()
    elif method == "pillow-limit":
        from PIL import Image

        def work(data):  # the work asked, and nothing else: decode (draft), resize, encode
            image = Image.open(io.BytesIO(data))
            scale = 256 / min(image.size)
            size = (round(image.width * scale), round(image.height * scale))
            image.draft("RGB", size)
            image = image.convert("RGB").resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            image.save(io.BytesIO(), format="JPEG", quality=90)
    elif method == "img2dataset+imagehash":
        import imagehash
        from img2dataset.resizer import Resizer  # as img2dataset runs it (keep_ratio: short side to 256)
        from PIL import Image

        resizer = Resizer(
            image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True, encode_format="jpg", encode_quality=90
        )

        def work(data):
            resized, *_, error = resizer(io.BytesIO(data))
            assert error is None, error
            imagehash.phash(Image.open(io.BytesIO(resized)))
    elif method == "download:img2dataset-then-clean":
        from img2dataset.resizer import Resizer

        from tasks.media.image import decode_image

        resizer = Resizer(
            image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True, encode_format="jpg", encode_quality=90
        )

        def work(data):  # a download resized by img2dataset's resizer, then decoded again by clean to measure it
            resized, *_, error = resizer(io.BytesIO(data))
            assert error is None, error
            decode_image(resized)
    elif method == "download:mmetl":
        from tasks.fetch.resize import ImageResizer

        resize = ImageResizer(
            image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True, encode_format="jpg", encode_quality=90
        )

        def work(data):  # one decode: resized and measured; clean keeps the facts
            resize(data)
    else:
        from tasks.media.image import ImagePreset, decode_image

        preset = ImagePreset(short_side=256, format="jpg", quality=90)

        def work(data):
            decode_image(data, preset=preset)

    return _timed(work, images)


def run_audio(n: int) -> dict:
    from tasks.media.audio import AudioPreset, decode_audio

    clips = [p.read_bytes() for p in sorted(Path("/usr/share/asterisk/sounds/en_US_f_Allison").glob("*.wav"))][:n]
    preset = AudioPreset(sample_rate=16000, mono=True, log_mel=(("hop_length", 256), ("n_fft", 1024), ("n_mels", 80)))
    seconds = []
    result = _timed(lambda data: seconds.append(decode_audio(data, preset).duration_s), clips)
    result["audio_seconds"] = sum(seconds)
    result["real_time_factor"] = sum(seconds) / result["seconds"]
    return result


CLIPS_DIR = REPO / "bench" / "out" / "clean" / "clips"


def make_clips(n: int) -> list[bytes]:
    """n MP4s of 6 s, 640 x 480, 30 fps: the camera panning over a real photograph, a real voice as the
    sound (tests/realmedia.py); made once and kept under bench/out."""
    CLIPS_DIR.mkdir(parents=True, exist_ok=True)
    paths = [CLIPS_DIR / f"clip-{i:03d}.mp4" for i in range(n)]
    if not all(p.exists() for p in paths):
        from tests.realmedia import photo_video, skimage_photos, speech

        photos = list(skimage_photos(PHOTOS[:7]).values())
        voices = list(speech(n, min_seconds=3.0).values())
        for i, path in enumerate(paths):
            if not path.exists():
                voice = voices[i % len(voices)]
                track = voice if len(voice) >= 6 * 8000 else np.resize(voice, 6 * 8000)
                path.write_bytes(photo_video(photos[i % len(photos)], (640, 480), seconds=6.0, fps=30, track=track))
    return [p.read_bytes() for p in paths]


def run_videos(method: str, n: int) -> dict:
    import av

    clips = make_clips(n)
    if method in ("video-decode-only", "video-decode+flow"):
        flow = method == "video-decode+flow"

        def work(data):
            with av.open(io.BytesIO(data)) as container:
                video = container.streams.video[0]
                for frame in container.decode(video, *container.streams.audio):
                    if flow and isinstance(frame, av.VideoFrame):
                        bare_flow.feed(frame)
            bare_flow.reset()
    else:
        from tasks.media.audio import AudioPreset
        from tasks.media.video import VideoPreset, decode_video

        preset = VideoPreset(keyframes=8, motion=method != "video-mmetl-no-motion")
        sound = AudioPreset(sample_rate=16000, log_mel=(("hop_length", 256), ("n_fft", 1024), ("n_mels", 80)))

        def work(data):
            decode_video(data, preset, sound)

    result = _timed(work, clips)
    result["video_seconds"] = 6.0 * n
    result["real_time_factor"] = result["video_seconds"] / result["seconds"]
    return result


class _BareFlow:
    """What a user would write for a motion score: OpenCV's Farnebäck on two consecutive frames at each whole
    second, scaled to 160 px grey with PyAV, the median of the mean magnitudes."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.next_s, self.before, self.values = 0.0, None, []

    def feed(self, frame) -> None:
        import cv2

        if self.before is None and frame.time < self.next_s:
            return
        grey = frame.to_ndarray(width=160, height=120, format="gray")
        if self.before is None:
            self.before, self.next_s = grey, int(frame.time) + 1.0
            return
        flow = cv2.calcOpticalFlowFarneback(self.before, grey, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        self.values.append(float(np.hypot(flow[..., 0], flow[..., 1]).mean()))
        self.before = None


bare_flow = _BareFlow()


def _timed(work, inputs: list) -> dict:
    import torch  # loaded before timing by every method alike, as a worker would have it loaded

    torch.set_num_threads(1)
    work(inputs[0])  # warm: imports, the language model of nothing, first-call costs
    half = len(inputs) // 2
    start = time.perf_counter()
    for data in inputs[:half]:
        work(data)
    rss_half = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for data in inputs[half:]:
        work(data)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "items": len(inputs),
        "per_second": len(inputs) / seconds,
        "rss_half_mb": rss_half,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _one(method: str, n: int) -> dict:
    return one_process(__file__, method, n)


def one_process(script: str, method: str, n: int) -> dict:
    """One method of a benchmark script (`script --one METHOD N` prints its result as JSON) in a fresh
    process: its own peak RSS."""
    result = subprocess.run([sys.executable, script, "--one", method, str(n)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{method} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def median_range(values: list[float], fmt: str) -> str:
    """`median (min-max)` over rounds."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "clean"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images-only", action="store_true", help="skip the audio and video measurements")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, n = args.one[0], int(args.one[1])
        if method == "audio":
            result = run_audio(n)
        elif method.startswith("video"):
            result = run_videos(method, n)
        else:
            result = run_images(method, n)
        print(json.dumps(result))
        return 0
    # rounds interleave the methods, so a slow minute on a shared VM hits every method alike; the
    # ratio is taken within each round, and the median over rounds reported with its range
    image_methods = (
        "decode-only",
        "decode-only-draft",
        "pillow-limit",
        "img2dataset+imagehash",
        "mmetl",
        "download:img2dataset-then-clean",
        "download:mmetl",
    )
    rounds: dict[str, list[dict]] = {m: [] for m in image_methods}
    for round_no in range(args.rounds):
        for method in image_methods:
            rounds[method].append(_one(method, args.images))
            print(round_no, method, rounds[method][-1], flush=True)
    if args.images_only:
        args.clips = args.videos = 0
    runs = {"audio": _one("audio", args.clips)} if args.clips else {}
    print("audio", runs.get("audio"), flush=True)
    video_rounds: dict[str, list[dict]] = {
        m: [] for m in ("video-decode-only", "video-decode+flow", "video-mmetl-no-motion", "video-mmetl")
    }
    for round_no in range(args.rounds if args.videos else 0):
        for method in video_rounds:
            video_rounds[method].append(_one(method, args.videos))
            print(round_no, method, video_rounds[method][-1], flush=True)
    lines = [
        "# Clean, per item on one core",
        "",
        f"{args.images} real-photo JPEGs, {LONG_SIDE} px long side; resize to 256 px short side, JPEG 90; "
        f"{args.rounds} interleaved rounds, medians (range over rounds).",
        "",
        "| method | images/s | mmetl ÷ it | peak RSS at half / all (MB) |",
        "|---|---|---|---|",
    ]
    for method in image_methods:
        rates = [r["per_second"] for r in rounds[method]]
        ratios = [ours["per_second"] / r["per_second"] for ours, r in zip(rounds["mmetl"], rounds[method])]
        lines.append(
            f"| {method} | {median_range(rates, '.0f')} | {median_range(ratios, '.2f')} | "
            f"{max(r['rss_half_mb'] for r in rounds[method]):.0f} / {max(r['rss_mb'] for r in rounds[method]):.0f} |"
        )
    pairs = zip(rounds["download:mmetl"], rounds["download:img2dataset-then-clean"])
    one_decode = median_range([a["per_second"] / b["per_second"] for a, b in pairs], ".2f")
    lines += [
        "",
        "A downloaded image, resized to 256 px and measured for clean: mmetl's one decode ÷ img2dataset's"
        f" resizer then clean's decode of its output: {one_decode}.",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not runs:
        (out / "report.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    a = runs["audio"]
    lines += [
        "",
        f"Audio: {a['items']} speech clips, {a['audio_seconds']:.0f} s of sound: decode + resample to 16 kHz mono"
        f" + 80-band log-mel at {a['real_time_factor']:.0f}× real time on one core; peak RSS "
        f"{a['rss_half_mb']:.0f} / {a['rss_mb']:.0f} MB at half / all.",
    ]
    ours, plain = video_rounds["video-mmetl"], video_rounds["video-decode-only"]
    ratios = [o["per_second"] / p["per_second"] for o, p in zip(ours, plain)]
    lines += [
        "",
        f"Video: {args.videos} clips of 6 s, 640 x 480, 30 fps, with speech. mmetl's clean (decode every frame and "
        "sample, keyframe pHashes, 8 thumbnails, loudness, Chromaprint, 16 kHz log-mel) at "
        f"{statistics.median(o['real_time_factor'] for o in ours):.1f}× real time; PyAV decode-only at "
        f"{statistics.median(p['real_time_factor'] for p in plain):.1f}×: mmetl ÷ decode-only "
        f"{median_range(ratios, '.2f')}; peak RSS "
        f"{max(o['rss_half_mb'] for o in ours):.0f} / {max(o['rss_mb'] for o in ours):.0f} MB at half / all.",
    ]
    lines += _motion_lines(video_rounds)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _motion_lines(video_rounds: dict[str, list[dict]]) -> list[str]:
    """What the motion score costs: mmetl's clean with and without it, and the bare library's decode + flow
    against decode-only (seconds per clip, within each round)."""

    def per_clip(method: str) -> list[float]:
        return [r["seconds"] / r["items"] for r in video_rounds[method]]

    ours = [a - b for a, b in zip(per_clip("video-mmetl"), per_clip("video-mmetl-no-motion"))]
    bare = [a - b for a, b in zip(per_clip("video-decode+flow"), per_clip("video-decode-only"))]
    share = [o / c for o, c in zip(ours, per_clip("video-mmetl-no-motion"))]
    ratio = [b / o if o > 0 else float("inf") for o, b in zip(ours, bare)]
    return [
        "",
        f"Motion: the score adds {median_range([1000 * o for o in ours], '.1f')} ms a clip to mmetl's clean "
        f"({median_range([100 * x for x in share], '.1f')} % of it); the bare library (PyAV frames to 160 px grey, "
        f"OpenCV Farnebäck on the same pairs) adds {median_range([1000 * b for b in bare], '.1f')} ms to "
        f"decode-only: mmetl's throughput ÷ the bare call's {median_range(ratio, '.2f')}.",
    ]


if __name__ == "__main__":
    sys.exit(main())
