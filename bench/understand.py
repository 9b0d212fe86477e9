"""What understanding media costs, on real recordings, against the bare library call on the same inputs in
one run (`make bench`; one process each, one core).

Voice activity, on Debian's Asterisk prompts (a person reading, 8 kHz WAV; N of them, default 400), each
between 2 s of low noise, as clean sees them (FLAC at 16 kHz):
- clean:             the audio kind's clean (decode, loudness, Chromaprint, landmarks, FLAC) without it.
- clean+vad:         the same with clean.audio.voice_activity (tasks/media/speech.py: Silero's sequence
                     model through ONNX Runtime, one call a recording).
- silero:            what a user would write with the silero-vad package: decode to 16 kHz (the same
                     PyAV read), `load_silero_vad()` and `get_speech_timestamps` (its PyTorch model, chunk
                     by chunk).
- silero-onnx:       the same with `load_silero_vad(onnx=True)`.
Reported: the share of clean voice activity adds, and mmetl's throughput ÷ each bare call's (same decode).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = ("clean", "clean+vad", "vad", "silero", "silero-onnx")


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


def work_of(method: str):
    """The work one method does per recording."""
    if method.startswith("clean"):
        from tasks.media.kinds import KINDS
        from tasks.stages.clean import CleanSettings

        kind = KINDS["audio"](CleanSettings(audio={"voice_activity": method == "clean+vad"}))
        return kind.clean
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


def run(method: str, n: int) -> dict:
    import torch

    torch.set_num_threads(1)
    inputs = recordings(n)
    work = work_of(method)
    work(inputs[0])  # warm: the model's load and first call
    start = time.perf_counter()
    for data in inputs:
        work(data)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "items": n, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _one(method: str, n: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--one", method, str(n)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{method} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def _median_range(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "understand"))
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run(args.one[0], int(args.one[1]))))
        return 0
    rounds: dict[str, list[dict]] = {m: [] for m in METHODS}
    for round_no in range(args.rounds):  # interleaved, so a slow minute hits every method alike
        for method in METHODS:
            rounds[method].append(_one(method, args.recordings))
            print(round_no, method, rounds[method][-1], flush=True)

    def per_item(method: str) -> list[float]:
        return [r["seconds"] / r["items"] for r in rounds[method]]

    added = [a - b for a, b in zip(per_item("clean+vad"), per_item("clean"))]
    share = [a / b for a, b in zip(added, per_item("clean"))]
    lines = [
        "# Understanding media, per item on one core",
        "",
        f"Voice activity: {args.recordings} real prompts between 2 s of noise (FLAC, 16 kHz); {args.rounds} "
        "interleaved rounds, medians (range over rounds).",
        "",
        "| method | ms / recording | mmetl's vad ÷ it (throughput) | peak RSS (MB) |",
        "|---|---|---|---|",
    ]
    for method in METHODS:
        ratio = [t / v for v, t in zip(per_item("vad"), per_item(method))]
        lines.append(
            f"| {method} | {_median_range([1000 * t for t in per_item(method)], '.1f')} | "
            f"{_median_range(ratio, '.2f') if method not in ('clean', 'clean+vad') else '-'} | "
            f"{max(r['rss_mb'] for r in rounds[method]):.0f} |"
        )
    lines += [
        "",
        f"clean.audio.voice_activity adds {_median_range([1000 * a for a in added], '.1f')} ms a recording to "
        f"clean ({_median_range([100 * s for s in share], '.0f')} % of it).",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
