"""What understanding media costs, on real media, against the bare library call on the same inputs in one
run (`make bench`; one process each, one core).

Voice activity, on Debian's Asterisk prompts (a person reading, 8 kHz WAV, each at least 1 s; N of them,
default 300) between 2 s of low noise, as clean sees them (FLAC at 16 kHz):
- clean / clean+vad:  the audio kind's clean (decode, loudness, Chromaprint, landmarks, FLAC) without and
                      with clean.audio.voice_activity.
- vad:                tasks/media/speech.listen alone (Silero's sequence model on ONNX Runtime, one call).
- silero:             what a user would write with the silero-vad package: the same 16 kHz read, then
                      `load_silero_vad()` and `get_speech_timestamps` (its PyTorch model, chunk by chunk).
- silero-onnx:        the same with `load_silero_vad(onnx=True)`.
Text in pictures, on N JPEGs (default 150) of COCO's size made from scikit-image's photographs (bench/clean.py),
a third of them with a poster's lines drawn on (tests/test_ocr.py):
- image-clean / +detect / +read: the image kind's clean without OCR, with clean.image.ocr detect, and read.
- detect / read:      tasks/media/ocr.read_image alone.
- rapidocr-detect / rapidocr: RapidOCR as its README calls it (`RapidOCR()(picture)`, its defaults: the
                      detector on the short side scaled to 736, the angle classifier, the recogniser;
                      detect-only with `use_rec=False`), given one thread as ours is.
Transcripts, on the first N of those recordings (default 60):
- transcribe:         tasks/models/speech.PocketSphinx (decoder made once), after the same 16 kHz read.
- pocketsphinx:       pocketsphinx's own `Decoder()` with its defaults, `process_raw` of the whole recording.
Scene cuts, on N clips (default 40) of 6 s at 640 x 480, 30 fps, panning over real photographs with a voice
(bench/clean.py's):
- video-clean:        clean's decode of each clip (tasks/media/video.decode_video, 8 keyframes).
- scenes:             tasks/media/scenes.find_scenes (the content detector, PyAV from memory).
- scenedetect:        `scenedetect.detect(path, ContentDetector())` as its README calls it, on the same file.
Reported: the share of clean each adds, and mmetl's throughput ÷ each bare call's on the same inputs.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.clean import median_range, one_process  # noqa: E402  (after the path is set)

VOICE = ("clean", "clean+vad", "vad", "silero", "silero-onnx")
ASR = ("transcribe", "pocketsphinx")
VIDEO = ("video-clean", "scenes", "scenedetect")
OCR = ("image-clean", "image-clean+detect", "image-clean+read", "detect", "read", "rapidocr-detect", "rapidocr")


def recordings(n: int) -> list[bytes]:
    from tasks.media.audio import encode_flac
    from tests.realmedia import speech

    rng = np.random.default_rng(0)
    made = []
    for prompt in speech(n, min_seconds=1.0).values():
        voice = np.repeat(prompt.astype(np.float32) / 32768, 2)
        pad = rng.normal(0, 0.01, 32000).astype(np.float32)
        made.append(encode_flac(np.concatenate([pad, voice, pad])[None], 16000))
    return made


def pictures(n: int) -> list[bytes]:
    """n real-photo JPEGs, every third with a poster's lines on it."""
    from bench.clean import make_images
    from tests.test_ocr import POSTER, jpeg, with_text

    made = make_images(n)
    for i in range(0, n, 3):
        photo = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(__import__("io").BytesIO(made[i])))
        made[i] = jpeg(with_text(photo, POSTER, 40 + 8 * (i % 4))[0])
    return made


def voice_work(method: str):
    if method.startswith("clean"):
        from tasks.media.kinds import KINDS
        from tasks.stages.clean import CleanSettings

        return KINDS["audio"](CleanSettings(audio={"voice_activity": method == "clean+vad"})).clean
    if method == "vad":
        from tasks.media.speech import listen

        return listen
    import torch

    threads = torch.get_num_threads()
    from silero_vad import get_speech_timestamps, load_silero_vad  # its import sets torch to one thread

    torch.set_num_threads(threads)
    from tasks.media.audio import mono_samples

    model = load_silero_vad(onnx=method == "silero-onnx")
    return lambda data: get_speech_timestamps(torch.from_numpy(mono_samples(data, 16000, 3600.0)), model)


def ocr_work(method: str):
    if method.startswith("image-clean"):
        from tasks.media.kinds import KINDS
        from tasks.stages.clean import CleanSettings

        ocr = method.partition("+")[2] or "off"
        kind = KINDS["image"](CleanSettings(image={"ocr": ocr}))
        return lambda data: kind.facts({"media_bytes": data, "phash": None, "width": 0, "height": 0})
    if method in ("detect", "read"):
        from tasks.media.ocr import read_image

        return lambda data: read_image(data, method)
    import io

    from PIL import Image
    from rapidocr import RapidOCR

    one_thread = {f"EngineConfig.onnxruntime.{k}_op_num_threads": 1 for k in ("intra", "inter")}
    engine = RapidOCR(params={**one_thread, "Global.log_level": "error"})
    read = method == "rapidocr"
    return lambda data: engine(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[..., ::-1], use_rec=read)


def asr_work(method: str):
    from tasks.media.audio import mono_samples

    if method == "transcribe":
        from tasks.models.speech import PocketSphinx

        model = PocketSphinx()
        return lambda data: model.transcribe(mono_samples(data, 16000, 3600.0))
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL")

    def heard(data):
        pcm = (np.clip(mono_samples(data, 16000, 3600.0), -1, 1) * 32767).astype(np.int16).tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        return decoder.hyp()

    return heard


def video_work(method: str):
    if method == "video-clean":
        from tasks.media.video import VideoPreset, decode_video

        return lambda data: decode_video(data, VideoPreset(keyframes=8))
    if method == "scenes":
        from tasks.media.scenes import ScenesConfig, find_scenes

        return lambda data: find_scenes(data, ScenesConfig())
    import tempfile

    from scenedetect import ContentDetector, detect

    def bare(data):
        with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
            f.write(data)
            f.flush()
            return detect(f.name, ContentDetector())

    return bare


def run(method: str, n: int) -> dict:
    import torch

    torch.set_num_threads(1)
    if method in OCR:
        inputs, work = pictures(n), ocr_work(method)
    elif method in VIDEO:
        from bench.clean import make_clips

        inputs, work = make_clips(n), video_work(method)
    else:
        inputs, work = recordings(n), (voice_work if method in VOICE else asr_work)(method)
    work(inputs[0])  # warm: the model's load and first call
    start = time.perf_counter()
    for data in inputs:
        work(data)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "items": n, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _one(method: str, n: int) -> dict:
    return one_process(__file__, method, n)


def table(rounds: dict[str, list[dict]], ours: dict[str, str], what: str) -> list[str]:
    """A row per method: ms an item, and (for a bare library call) mmetl's throughput ÷ its own."""

    def per_item(method: str) -> list[float]:
        return [r["seconds"] / r["items"] for r in rounds[method]]

    lines = ["", f"| method | ms / {what} | mmetl ÷ it (throughput) | peak RSS (MB) |", "|---|---|---|---|"]
    for method in rounds:
        mine = ours.get(method)
        ratio = median_range([t / v for v, t in zip(per_item(mine), per_item(method))], ".2f") if mine else "-"
        label = f"{method} (vs {mine})" if mine else method
        lines.append(f"| {label} | {median_range([1000 * t for t in per_item(method)], '.1f')} | {ratio} | "
                     f"{max(r['rss_mb'] for r in rounds[method]):.0f} |")  # fmt: skip
    return lines


def added(rounds: dict[str, list[dict]], base: str, method: str) -> str:
    """What `method` adds to `base`, a share of it: `ms (range) ms, % (range) %`."""
    times = {m: [r["seconds"] / r["items"] for r in rounds[m]] for m in (base, method)}
    extra = [a - b for a, b in zip(times[method], times[base])]
    share = [e / b for e, b in zip(extra, times[base])]
    return f"{median_range([1000 * e for e in extra], '.1f')} ms ({median_range([100 * s for s in share], '.0f')} %)"


def share(rounds: dict[str, list[dict]], method: str, base: str) -> str:
    """`method`'s time as a share of `base`'s, within each round: `% (range) %`."""
    pairs = zip(rounds[method], rounds[base])
    ratios = [100 * (m["seconds"] / m["items"]) / (b["seconds"] / b["items"]) for m, b in pairs]
    return f"{median_range(ratios, '.0f')} %"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=int, default=300)
    parser.add_argument("--pictures", type=int, default=150)
    parser.add_argument("--transcripts", type=int, default=60)
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "understand"))
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run(args.one[0], int(args.one[1]))))
        return 0
    rounds: dict[str, list[dict]] = {m: [] for m in VOICE + ASR + VIDEO + OCR}
    sizes = {**dict.fromkeys(VOICE, args.recordings), **dict.fromkeys(ASR, args.transcripts),
             **dict.fromkeys(VIDEO, args.videos)}  # fmt: skip
    for round_no in range(args.rounds):  # interleaved, so a slow minute hits every method alike
        for method in rounds:
            rounds[method].append(_one(method, sizes.get(method, args.pictures)))
            print(round_no, method, rounds[method][-1], flush=True)
    voice, ocr = {m: rounds[m] for m in VOICE}, {m: rounds[m] for m in OCR}
    asr = {m: rounds[m] for m in ("clean", *ASR)}
    lines = [
        "# Understanding media, per item on one core",
        "",
        f"{args.rounds} interleaved rounds, medians (range over rounds).",
        "",
        f"Voice activity: {args.recordings} real prompts between 2 s of noise (FLAC, 16 kHz).",
        *table(voice, {"silero": "vad", "silero-onnx": "vad"}, "recording"),
        "",
        f"clean.audio.voice_activity adds {added(voice, 'clean', 'clean+vad')} to clean.",
        "",
        f"Transcripts: the first {args.transcripts} of those prompts (clean's row: all {args.recordings}).",
        *table(asr, {"pocketsphinx": "transcribe"}, "recording"),
        "",
        f"Scene cuts: {args.videos} clips of 6 s, 640 x 480, 30 fps.",
        *table({m: rounds[m] for m in VIDEO}, {"scenedetect": "scenes"}, "clip"),
        "",
        f"clean.video.scenes searches a clip in {share(rounds, 'scenes', 'video-clean')} of that clip's clean (a"
        " pass of its own; with the default only videos over max_scene_s are searched).",
        "",
        f"Text in pictures: {args.pictures} real-photo JPEGs (640 px long side), a third with a poster's lines.",
        *table(ocr, {"rapidocr-detect": "detect", "rapidocr": "read"}, "picture"),
        "",
        f"clean.image.ocr adds {added(ocr, 'image-clean', 'image-clean+detect')} to clean with `detect`, "
        f"{added(ocr, 'image-clean', 'image-clean+read')} with `read`.",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
