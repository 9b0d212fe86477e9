"""The dedupe decision on an audio-heavy corpus: what verifying sound candidates on the waveform and the
leakage guard cost, against the same decision on the signatures alone (`make bench`; each measurement in a
fresh process, for its own peak RSS).

Corpus (made once into bench/out/dedupe_audio/corpus, cleaned by mmetl's own audio clean):
- N sounds at 16 kHz: 70% short (0.3-3 s: voiced syllables with a gliding pitch and three formants, or
  noise bursts in a random band with a random envelope), 30% long (4-10 s: syllables strung with pauses,
  which Chromaprint fingerprints); a planted copy of 5% of them (MP3 64 kbit/s, 8 kHz FLAC, a 50 ms
  trim at each end, or +6 dB, in turn).
  With `--corpus speech`, the sounds are espeak-ng speech instead: 70% one to three words, 30% sentences
  of 8-20 words, in 9 voices at random speeds and pitches; with `--corpus recordings`, the 568 real
  recordings of Debian's asterisk-core-sounds-en-wav (prompts, digits, letters, one speaker).
- 4 x N images: random pHashes (distinct pictures are 20+ bits apart, as random hashes are), a copy of
  1% of them 1-4 bits away. They make the decision's size realistic; their media are not needed.

Runs:
- signatures only: the decision with no media at hand (every candidate a signature proposes is taken as
  a copy: what dedupe did before sounds were verified).
- verified: the same decision reading the candidates' media and checking each pair on the waveform.
- guard: the leakage guard over the verified decision's items (its wider search, reusing the scores).
Reported: seconds and peak RSS of each, candidates checked, planted copies found, distinct sounds lost.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RATE = 16000
SHARDS = 16
PRINTS_UP_TO = 2_000  # sounds: the prints-only run above this takes hours (its false clusters)
FACTS = ("media_ext", "duration_s", "sample_rate", "channels", "audio_fingerprint", "sound_landmarks", "sound_print")


def syllable(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A voiced sound: a pulse train with a gliding pitch through three formant resonances."""
    n = int(seconds * RATE)
    pitch = rng.uniform(80, 300) * np.exp(np.linspace(0, rng.uniform(-0.4, 0.4), n))
    phase = np.cumsum(2 * np.pi * pitch / RATE)
    source = np.sign(np.sin(phase)) * (np.abs(np.sin(phase)) ** 8)
    spectrum = np.fft.rfft(source)
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    shape = sum(
        np.exp(-0.5 * ((freqs - f) / (0.1 * f)) ** 2) for f in (rng.uniform(300, 900), rng.uniform(900, 2500), 2800)
    )
    voiced = np.fft.irfft(spectrum * shape, n)
    return voiced * np.hanning(n) ** 0.3


def burst(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * RATE)
    low = rng.uniform(100, 5000)
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(freqs < low) | (freqs > min(low * rng.uniform(1.3, 3), 7800))] = 0
    t = np.arange(n) / RATE
    attack = rng.uniform(0.01, 0.2)
    return (
        np.fft.irfft(spectrum, n) * np.minimum(t / attack, 1) * np.exp(-rng.uniform(0.5, 4) * np.maximum(t - attack, 0))
    )


VOCABULARY = (
    "yes no up down left right on off stop go zero one two three four five six seven eight nine bed bird cat "
    "dog happy house tree wow backward forward follow learn visual red green blue water light sound music "
    "window garden morning evening river mountain paper number station table yellow orange purple"
).split()
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us+m3", "en-us+f2", "en-gb+m5", "en-us+f4")


def spoken(k: int) -> np.ndarray:
    """A short utterance (1-3 words, 70%) or a sentence (8-20 words), in one of 9 espeak-ng voices at a random
    speed and pitch, at 16 kHz."""
    from tests.realmedia import pcm

    rng = np.random.default_rng(k)
    words = rng.choice(VOCABULARY, rng.integers(8, 21) if k % 10 < 3 else rng.integers(1, 4))
    command = ["espeak-ng", "-v", str(rng.choice(VOICES)), "-s", str(rng.integers(110, 200))]
    command += ["-p", str(rng.integers(20, 80)), "--stdout", " ".join(words)]
    samples = pcm(subprocess.run(command, capture_output=True, check=True).stdout, rate=RATE)
    loud = np.flatnonzero(np.abs(samples) > 300)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples


def recordings() -> list[Path]:
    """Debian's asterisk-core-sounds-en-wav: one woman reading 568 prompts, digits, letters and words (8 kHz)."""
    from tests.realmedia import SPEECH

    return sorted(SPEECH.rglob("*.wav"))


def sound(k: int, kind: str = "synthetic") -> np.ndarray:
    if kind == "speech":
        return spoken(k)
    if kind == "recordings":
        from tests.realmedia import pcm

        return pcm(recordings()[k].read_bytes(), rate=RATE)
    rng = np.random.default_rng(k)
    if k % 10 < 3:  # long: syllables and pauses
        parts = []
        while sum(len(p) for p in parts) < rng.uniform(4, 10) * RATE:
            parts += [syllable(rng, rng.uniform(0.15, 0.5)), np.zeros(int(rng.uniform(0.05, 0.3) * RATE))]
        x = np.concatenate(parts)
    elif k % 2:
        x = syllable(rng, rng.uniform(0.3, 3.0))
    else:
        x = burst(rng, rng.uniform(0.3, 3.0))
    return (x / np.abs(x).max() * rng.uniform(0.2, 0.9) * 32767).astype(np.int16)


def copy_of(samples: np.ndarray, k: int) -> bytes:
    from tests.realmedia import encode_sound

    edit = k % 4
    if edit == 0:
        return encode_sound(samples, "mp3", "libmp3lame", RATE, RATE, bit_rate=64_000)
    if edit == 1:
        return encode_sound(samples, "flac", "flac", 8000, RATE)
    if edit == 2:
        return encode_sound(samples[800:-800], "wav", "pcm_s16le", RATE, RATE)
    louder = np.clip(samples.astype(np.float64) * 2, -32768, 32767).astype(np.int16)
    return encode_sound(louder, "wav", "pcm_s16le", RATE, RATE)


def clean_part(args: tuple[int, int, int, str, str]) -> int:
    """Make and clean sounds [start, stop) of a corpus of n: one shard and its media file."""
    import pyarrow as pa

    from tasks.core import storage
    from tasks.core.schema import MEDIA_SCHEMA, SAMPLE_SCHEMA
    from tasks.media.kinds import Audio
    from tasks.stages.clean import CleanSettings
    from tests.realmedia import encode_sound

    start, stop, n, folder, kind = args
    audio = Audio(CleanSettings())
    rows, media = [], []
    for k in range(start, stop):
        samples = sound(k, kind)
        files = [(f"s{k}", encode_sound(samples, "wav", "pcm_s16le", RATE, RATE))]
        if k % 20 == 0:
            files.append((f"s{k}.copy", copy_of(samples, k // 20)))
        for name, data in files:
            facts = audio.clean(data)
            sample_id = hashlib.sha1(name.encode()).hexdigest()[:20]
            row = {
                "sample_id": sample_id, "source": "bench", "group_id": f"bench:{name}", "modality": "audio",
                "source_uri": f"corpus/{name}.snd", "media_size": len(facts["media_bytes"]),
                "sha256": hashlib.sha256(facts["media_bytes"]).hexdigest(), "partition": "p",
                "source_rows": [k], "texts": [{"text": name, "kind": "caption"}],
                **{c: facts[c] for c in FACTS},
            }  # fmt: skip
            rows.append(row)
            media.append({"sample_id": sample_id, "media_bytes": facts["media_bytes"], "sidecars": []})
    shard = f"{folder}/shard-{start // max(1, -(-n // SHARDS)):05d}"
    storage.write_parquet(f"{shard}.media.parquet", pa.Table.from_pylist(media, MEDIA_SCHEMA))
    table = pa.Table.from_pylist([{f: r.get(f) for f in SAMPLE_SCHEMA.names} for r in rows], SAMPLE_SCHEMA)
    storage.write_parquet(f"{shard}.parquet", table)
    return len(rows)


def image_shard(folder: str, n: int, seed: int = 1) -> None:
    import pyarrow as pa

    from tasks.core import storage
    from tasks.core.schema import SAMPLE_SCHEMA

    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    copies = hashes[: n // 100].copy()
    for i in range(len(copies)):
        for bit in rng.choice(64, rng.integers(1, 5), replace=False):
            copies[i] ^= np.uint64(1) << np.uint64(bit)
    every = np.concatenate([hashes, copies])
    ids = [hashlib.sha1(f"i{i}".encode()).hexdigest()[:20] for i in range(len(every))]
    table = pa.table(
        {
            "sample_id": ids,
            "source": ["bench"] * len(ids),
            "group_id": [f"bench:i{i}" for i in range(len(ids))],
            "modality": ["image"] * len(ids),
            "phash": [f"{int(h):016x}" for h in every],
            "sha256": [hashlib.sha256(i.encode()).hexdigest() for i in ids],
            "width": [640] * len(ids),
            "height": [480] * len(ids),
            "partition": ["p"] * len(ids),
        }
    )
    columns = [
        table.column(f.name) if f.name in table.column_names else pa.nulls(len(table), f.type) for f in SAMPLE_SCHEMA
    ]
    storage.write_parquet(f"{folder}/images.parquet", pa.Table.from_arrays(columns, schema=SAMPLE_SCHEMA))


def make_corpus(folder: Path, n: int, kind: str) -> None:
    if (folder / "done.json").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-n // SHARDS)
    parts = [(s, min(s + per, n), n, str(folder), kind) for s in range(0, n, per)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        items = sum(pool.map(clean_part, parts))
    image_shard(str(folder), 4 * n)
    (folder / "done.json").write_text(
        json.dumps({"corpus": kind, "distinct_sounds": n, "sounds": items, "images": 4 * n + 4 * n // 100})
    )


def run(what: str, folder: Path, out: Path) -> dict:
    from tasks.core import storage
    from tasks.core.stored_media import StoredMedia
    from tasks.publish import leakage
    from tasks.stages import split
    from tasks.stages.dedupe import DedupeConfig, decide_duplicates
    from tasks.stages.split import SplitConfig

    shards = sorted(str(p) for p in folder.glob("*.parquet") if not p.name.endswith(".media.parquet"))
    media = StoredMedia([s.replace(".parquet", ".media.parquet") for s in shards if "shard-" in s])
    decision = str(out / f"{what}.decision.parquet")
    for stale in out.glob(f"{what}.*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    start = time.perf_counter()
    if what == "guard":
        decided = decide_duplicates(shards, str(out / "verified.decision.parquet"), DedupeConfig(), media=media)
        shards = applied(shards, decided.uri, out / "guard.refined")  # what the split sees: copies gone
        assignment = split.assign_splits(shards, SplitConfig(), str(out / "guard.assignment.parquet"))
        layout = storage.Layout(str(out / "root"), "bench", "p", "k")
        start = time.perf_counter()
        result = leakage.guard_splits(
            layout, shards, media, assignment.uri, DedupeConfig(), SplitConfig(on_leak="move"), decided.uri,
            str(out / "guard.moves.parquet"),
        )  # fmt: skip
        found = {"guard": result.report}
    else:
        from tasks.media import kinds

        verify = kinds.Audio.verified
        spent = [0.0]

        def timed(*args, **kwargs):  # the verification's own share of the decision
            began = time.perf_counter()
            try:
                return verify(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - began

        kinds.Audio.verified = staticmethod(timed)
        decided = decide_duplicates(shards, decision, DedupeConfig(), media=media if what == "verified" else None)
        found = {**decided.report, "verification_seconds": spent[0]}
    seconds = time.perf_counter() - start
    rejects = []
    if what != "guard":
        table = storage.read_parquet(decision).to_pylist()
        rejects = [(r["sample_id"], r["duplicate_of"], r["detail"]) for r in table if r["duplicate_of"]]
    return {
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "summary": {
            k: v for k, v in found.items() if k in ("verification", "by_modality", "guard", "verification_seconds")
        },
        "rejects": rejects,
    }


def applied(shards: list[str], decision_uri: str, folder: Path) -> list[str]:
    """The shards with the dedupe decision applied, as its stage would: copies dropped, groups joined."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tasks.core import storage

    decision = storage.read_parquet(decision_uri)
    gone = decision.filter(pc.is_valid(decision.column("duplicate_of"))).column("sample_id")
    regroup = dict(zip(decision.column("sample_id").to_pylist(), decision.column("group_id").to_pylist()))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for uri in shards:
        table = storage.read_parquet(uri)
        table = table.filter(pc.invert(pc.is_in(table.column("sample_id"), gone)))
        groups = [
            regroup.get(i, g)
            for i, g in zip(table.column("sample_id").to_pylist(), table.column("group_id").to_pylist())
        ]
        table = table.set_column(table.schema.get_field_index("group_id"), "group_id", pa.array(groups, pa.string()))
        written.append(str(folder / Path(uri).name))
        storage.write_parquet(written[-1], table)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "dedupe_audio"))
    # 2,000: at 20,000 (100k items) the print fallback for steady sounds grows as the square (bench/README.md)
    parser.add_argument("--sounds", type=int, default=2_000, help="distinct sounds (images: 4x as many)")
    parser.add_argument(
        "--corpus", choices=["synthetic", "speech", "recordings"], default="synthetic", help="what the sounds are"
    )
    parser.add_argument("--runs", nargs="+", choices=["prints", "verified", "guard"], help="only these runs")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    if args.one:
        print(json.dumps(run(args.one[0], Path(args.one[1]), out)))
        return 0
    # a corpus made by an mmetl that recorded other signatures is made anew
    if args.corpus == "recordings":
        args.sounds = min(args.sounds, len(recordings()))
    folder = out / f"corpus-{args.corpus}-{args.sounds}-{hashlib.sha1(' '.join(FACTS).encode()).hexdigest()[:8]}"
    started = time.perf_counter()
    make_corpus(folder, args.sounds, args.corpus)
    made = json.loads((folder / "done.json").read_text())
    print(f"corpus: {made} ({time.perf_counter() - started:.0f} s)", flush=True)
    results = {}
    # prints alone merge distinct sounds into clusters of thousands, whose ranking is quadratic: small corpora only
    runs = ("prints", "verified", "guard") if args.sounds <= PRINTS_UP_TO else ("verified", "guard")
    runs = [r for r in runs if not args.runs or r in args.runs]
    for what in runs:
        done = subprocess.run([sys.executable, __file__, "--out", str(out), "--one", what, str(folder)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return 1
        results[what] = json.loads(done.stdout)
        print(what, f"{results[what]['seconds']:.1f} s", json.dumps(results[what]["summary"]), flush=True)
    write_report(out, made, results)
    return 0


def _family(detail_id: str, names: dict[str, str]) -> str:
    return names[detail_id].removesuffix(".copy")


LABELS = {"prints": "signatures only", "verified": "verified on the waveform"}


def write_report(out: Path, made: dict, results: dict) -> None:
    n = made.get("distinct_sounds") or round(made["sounds"] / 1.05)  # a copy of every 20th
    names = {hashlib.sha1(f"s{k}{c}".encode()).hexdigest()[:20]: f"s{k}{c}" for k in range(n) for c in ("", ".copy")}
    planted = len(range(0, n, 20))  # every 20th sound has a copy
    lines = [
        f"# Dedupe decision on an audio-heavy corpus ({made['sounds']:,} {made['corpus']} sounds,"
        f" {made['images']:,} images; 2-core VM)",
        "",
        "| run | seconds | peak RSS MB | planted copies found | distinct sounds lost | sound candidates | refuted |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for what in ("prints", "verified"):
        if what not in results:
            continue
        r = results[what]
        sounds = [(a, b) for a, b, _ in r["rejects"] if a in names]
        found = sum(_family(a, names) == _family(b, names) for a, b in sounds)
        lost = sum(_family(a, names) != _family(b, names) for a, b in sounds)
        check = r["summary"].get("verification", {}).get("audio", {})
        lines.append(
            f"| {LABELS[what]} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {found} of {planted} | {lost} |"
            f" {check.get('candidates', '')} | {check.get('refuted', '')} |"
        )
    guard = results["guard"]
    lines.append(f"| guard (after verified) | {guard['seconds']:.1f} | {guard['peak_rss_mb']:.0f} | | | | |")
    after = results["verified"]["seconds"]
    verifying = results["verified"]["summary"]["verification_seconds"]
    extra = verifying + guard["seconds"]
    lines += [
        "",
        f"Verifying the sound candidates takes {verifying:.1f} s of the {after:.1f} s decision, and the guard"
        f" {guard['seconds']:.1f} s: together {extra / after:.0%} of the decision"
        f" ({extra / max(after - verifying, 1e-9):.1f}x the decision without verification).",
        "",
        "Guard report: " + json.dumps(guard["summary"]["guard"]),
    ]
    name = "report.md" if made["corpus"] == "synthetic" else f"report-{made['corpus']}.md"
    (out / name).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
