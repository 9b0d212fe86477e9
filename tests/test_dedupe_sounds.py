"""Short sounds are deduplicated on the signal: a print only proposes a pair, the waveforms decide. Distinct
sounds that look alike to a print (noises with similar bands, one word in two voices, "tree" and
"three") are never merged; copies of one recording (MP3 64-320 kbit/s, AAC, Opus, 8-48 kHz, +-6 dB,
50 ms trims) are found, down to 0.1 s. Every sound is made here: noise from numpy, words from espeak-ng."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from flows import cli
from tasks.core import storage
from tasks.media.audio import decode_audio
from tasks.publish import catalog
from tasks.publish.leakage import Leakage, search_config
from tasks.recipe import Recipe
from tasks.similar.landmarks import landmark_pairs
from tasks.similar.waveform import Sound, similarity
from tasks.sources import make_source
from tasks.stages.dedupe import DedupeConfig
from tasks.stages.split import LeakGuardConfig

from .helpers import build_in_process
from .realmedia import ESPEAK_RATE, encode_sound, speech, spoken

NOISE_RATE = 32000
WORDS = (
    "yes no up down left right on off stop go zero one two three four five six seven eight nine bed bird cat "
    "dog happy house marvin sheila tree wow backward forward follow learn visual"
).split()  # 35: a keyword-spotting vocabulary, with minimal pairs (on/one, no/go, tree/three)
VOICES = (("en-us", 160), ("en-gb", 140), ("en-us+f3", 185))  # three voices, three speeds


def _gain(samples: np.ndarray, db: float) -> np.ndarray:
    return np.clip(samples.astype(np.float64) * 10 ** (db / 20), -32768, 32767).astype(np.int16)


def _trim(samples: np.ndarray, rate: int, seconds: float = 0.05) -> np.ndarray:
    n = int(rate * seconds)
    return samples[n:-n]


def copies_of(samples: np.ndarray, rate: int) -> dict:
    """What a scraped corpus holds of one recording: re-encodes, other rates, louder, quieter, trimmed."""
    made = {
        "mp3-64k": lambda: encode_sound(samples, "mp3", "libmp3lame", 22050, rate, bit_rate=64_000),
        "mp3-320k": lambda: encode_sound(samples, "mp3", "libmp3lame", 44100, rate, bit_rate=320_000),
        "aac": lambda: encode_sound(samples, "adts", "aac", 22050, rate, bit_rate=96_000),
        "opus": lambda: encode_sound(samples, "ogg", "libopus", 48000, rate, bit_rate=48_000),
        "flac-8k": lambda: encode_sound(samples, "flac", "flac", 8000, rate),
        "flac-16k": lambda: encode_sound(samples, "flac", "flac", 16000, rate),
        "flac-48k": lambda: encode_sound(samples, "flac", "flac", 48000, rate),
        "louder6": lambda: encode_sound(_gain(samples, 6), "wav", "pcm_s16le", rate, rate),
        "quieter6": lambda: encode_sound(_gain(samples, -6), "wav", "pcm_s16le", rate, rate),
    }
    if len(samples) >= 0.3 * rate:
        made["trim50"] = lambda: encode_sound(_trim(samples, rate), "wav", "pcm_s16le", rate, rate)
    return made


def noise_burst(rng: np.random.Generator) -> np.ndarray:
    """1-2 s of noise in a random band (100 Hz to 12 kHz), with a random attack and decay and loudness."""
    n = int(rng.uniform(1.0, 2.0) * NOISE_RATE)
    low = rng.uniform(100, 6000)
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / NOISE_RATE)
    spectrum[(freqs < low) | (freqs > min(low * rng.uniform(1.3, 3.0), 12000))] = 0
    t = np.arange(n) / NOISE_RATE
    attack, decay = rng.uniform(0.01, 0.3), rng.uniform(0.5, 5)
    burst = np.fft.irfft(spectrum, n) * np.minimum(t / attack, 1) * np.exp(-decay * np.maximum(t - attack, 0))
    return (burst / np.abs(burst).max() * rng.uniform(0.2, 0.9) * 32767).astype(np.int16)


def build_sounds(folder, sounds: dict[str, tuple[bytes, str]], **recipe) -> tuple:
    """A build of these sounds (name -> (file bytes, family)): what it published and rejected, by family."""
    rows = []
    for name, (data, family) in sounds.items():
        storage.write_bytes(str(folder / name), data)
        rows.append({"media": name, "modality": "audio", "text": f"{family} ({name})"})
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(name="sounds", kind="manifest", uri=str(folder / "captions.jsonl"))
    settings = {"filter": {"min_audio_s": 0, "max_silence_ratio": 1.0}, **recipe}
    layout, manifest = build_in_process([source], str(folder / "out"), Recipe(name="t", sources=(source,), **settings))
    index = [
        r
        for s in manifest["splits"]
        for r in pq.read_table(storage.join(layout.version, f"{s}/index.parquet")).to_pylist()
    ]
    rejects = pq.read_table(storage.join(layout.version, "rejects.parquet")).to_pylist()
    family_of = {name: family for name, (_, family) in sounds.items()}
    stats = storage.read_json(storage.join(layout.version, "stats.json"))
    return index, rejects, family_of, {**stats, "version": layout.version}


def _name(row: dict) -> str:
    return row["source_uri"].rsplit("/", 1)[-1]


def check_families(index, rejects, family_of) -> None:
    """Each family published exactly once (no distinct sound lost, every copy gone), and each reject a copy
    of its own family, verified on the waveform."""
    published = sorted(family_of[_name(r)] for r in index)
    assert published == sorted(set(family_of.values())), "a distinct sound was merged, or a copy survived"
    by_id = {r["sample_id"]: family_of[_name(r)] for r in index}
    for reject in rejects:
        assert reject["reason"] in ("duplicate:audio", "duplicate:exact"), reject
        assert by_id[reject["duplicate_of"]] == family_of[_name(reject)], reject
        assert reject["reason"] == "duplicate:exact" or "waveform similarity" in reject["detail"]


@pytest.mark.slow
def test_three_hundred_distinct_noise_bursts_stay_and_copies_of_thirty_go(tmp_path, capsys):
    rng = np.random.default_rng(31)
    sounds = {}
    for k in range(300):
        burst = noise_burst(rng)
        sounds[f"burst{k:03d}.wav"] = (encode_sound(burst, "wav", "pcm_s16le", NOISE_RATE, NOISE_RATE), f"burst{k}")
        if k < 30:
            edits = copies_of(burst, NOISE_RATE)
            for edit in ("mp3-64k", "flac-16k", "trim50"):
                sounds[f"burst{k:03d}.{edit}.snd"] = (edits[edit](), f"burst{k}")
    index, rejects, family_of, stats = build_sounds(tmp_path, sounds)
    check_families(index, rejects, family_of)
    assert len(index) == 300 and len(rejects) == 90
    assert {r["split"] for r in index} == {"train", "val", "test"}
    report = stats["dedupe"]["verification"]["audio"]
    assert report["confirmed"] >= 90 - stats["dedupe"]["by_reason"].get("duplicate:exact", 0)  # pairs, not copies
    assert report["unverified"] == 0 and report["confirmed_similarity"][0] >= 0.6
    # candidates are about the copies: of the ~73k pairs of these 390 sounds, few look-alikes to refute
    assert report["refuted"] <= 30, report
    assert stats["dedupe"]["by_modality"]["audio"] == {"clusters": 30, "removed": 90}
    # a user reviews a version's sound duplicates with their scores
    listed = catalog.duplicates(stats["version"], "audio")
    assert len(listed) == 90 and all(r["similarity"] >= 0.6 or r["reason"] == "duplicate:exact" for r in listed)
    assert cli.main(["inspect", stats["version"], "--duplicates", "audio"]) == 0
    assert "90 audio items rejected as copies; 0 not verified" in capsys.readouterr().out


@pytest.mark.slow
def test_spoken_words_in_three_voices_never_merge_and_every_copy_is_found(tmp_path):
    """35 words x 3 voices (105 distinct utterances, 0.3-1 s) and 12 sounds of 0.1-0.25 s (the loudest
    stretch of a word in a fourth voice); each with three of the copies in turn (every kind of copy made
    30 times or more)."""
    sounds, k = {}, 0
    utterances = {f"{word}-{voice}-{speed}": spoken(word, voice, speed) for voice, speed in VOICES for word in WORDS}
    for n, word in enumerate(WORDS[:12]):
        samples = spoken(word, "en-gb+m3", 120)
        seconds = (0.1, 0.15, 0.2, 0.25)[n % 4]
        span = int(seconds * ESPEAK_RATE)
        start = int(np.argmax(np.convolve(samples.astype(np.float64) ** 2, np.ones(span), "valid")))
        utterances[f"piece{seconds}-{word}"] = samples[start : start + span]
    for name, samples in utterances.items():
        sounds[f"{name}.wav"] = (encode_sound(samples, "wav", "pcm_s16le", ESPEAK_RATE, ESPEAK_RATE), name)
        edits = copies_of(samples, ESPEAK_RATE)
        for edit in list(edits)[k % len(edits) :][:3] or list(edits)[:3]:
            sounds[f"{name}.{edit}.snd"] = (edits[edit](), name)
        k += 3
    index, rejects, family_of, stats = build_sounds(tmp_path, sounds)
    check_families(index, rejects, family_of)
    assert len(index) == len(utterances) == 117
    report = stats["dedupe"]["verification"]["audio"]
    refuted = report["refuted_similarity"]
    # look-alikes the signatures proposed (one synthetic voice's "s" in "six" and "yes", one word in two of
    # its voices) stay well under the threshold: at most 0.5, where the first look at 2 kHz refutes a pair
    assert refuted is None or refuted[1] <= 0.5
    # the signatures propose few look-alikes: of the ~109k pairs of these 468 items, under 600 (0.55%), most of
    # them one synthetic voice's words in its variants (each look-alike pair of utterances brings their copies)
    assert report["refuted"] < 600, report


def test_a_copy_dedupe_is_told_to_miss_is_caught_by_the_leakage_guard(tmp_path):
    """Dedupe's thresholds set so tight that MP3 copies of words pass as distinct: the guard's wider search,
    verified on the waveform, finds every pair across splits; it fails the build naming them, or (move)
    puts each copy's new group into its original's split."""
    sounds = {}
    for word in WORDS:
        samples = spoken(word, "en-us", 160)
        sounds[f"{word}.wav"] = (encode_sound(samples, "wav", "pcm_s16le", ESPEAK_RATE, ESPEAK_RATE), word)
        sounds[f"{word}.mp3"] = (copies_of(samples, ESPEAK_RATE)["mp3-64k"](), word)
    tight = {"dedupe": {"short_audio_max_db": 0.1, "audio_max_ber": 0.001, "audio_min_landmarks": 1000}}
    with pytest.raises(Leakage, match=r"copies of train items: .*duplicate:audio.*waveform similarity"):
        build_sounds(tmp_path / "fail", sounds, **tight)
    index, rejects, family_of, stats = build_sounds(tmp_path / "move", sounds, **tight, split={"on_leak": "move"})
    assert not rejects and len(index) == 2 * len(WORDS)  # dedupe merged nothing
    split_of = {}
    for row in index:
        split_of.setdefault(family_of[_name(row)], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in split_of.values())
    assert stats["dedupe"]["leak_guard"]["leaks"] > 0


def test_waveform_similarity_is_blind_to_gain_and_polarity_and_sees_a_different_recording():
    rng = np.random.default_rng(0)
    sound = rng.normal(size=8000)
    shifted = np.concatenate([np.zeros(123), -0.25 * sound])[:8000]  # later, quieter, inverted, cut short
    assert similarity(Sound(sound, 8000), Sound(shifted, 8000), 8000) > 0.99
    assert similarity(Sound(sound, 8000), Sound(rng.normal(size=8000), 8000), 8000) < 0.2
    half = np.concatenate([sound[:4000], rng.normal(size=4000)])  # the same for half its length only
    assert similarity(Sound(sound, 8000), Sound(half, 8000), 8000) < 0.2


def test_a_copy_of_a_published_sound_is_verified_on_the_published_tar(tmp_path):
    """A later partition with MP3 copies of words an earlier one published, beside new words: the copies are
    `duplicate:published`, checked on the waveform read from the published tars; the new words stay."""
    drops = tmp_path / "drops"
    first, second = drops / "2026-01-01", drops / "2026-01-02"
    rows = {first: [], second: []}
    for n, word in enumerate(WORDS[:16]):
        samples = spoken(word, "en-us", 160)
        storage.write_bytes(
            str(first / f"{word}.wav"), encode_sound(samples, "wav", "pcm_s16le", ESPEAK_RATE, ESPEAK_RATE)
        )
        rows[first].append({"media": f"{word}.wav", "modality": "audio", "text": f"a voice saying {word}"})
        if n % 2 == 0:
            storage.write_bytes(str(second / f"{word}.mp3"), copies_of(samples, ESPEAK_RATE)["mp3-64k"]())
            rows[second].append({"media": f"{word}.mp3", "modality": "audio", "text": f"{word} said once more"})
    for word in WORDS[16:24]:  # distinct words, some close to published ones (tree / three)
        samples = spoken(word, "en-gb", 140)
        storage.write_bytes(
            str(second / f"{word}.wav"), encode_sound(samples, "wav", "pcm_s16le", ESPEAK_RATE, ESPEAK_RATE)
        )
        rows[second].append({"media": f"{word}.wav", "modality": "audio", "text": f"a voice saying {word}"})
    for folder, lines in rows.items():
        (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    source = make_source(name="words", kind="manifest", uri=str(drops / "{partition}" / "captions.jsonl"))
    recipe = Recipe(name="t", sources=(source,), filter={"min_audio_s": 0, "max_silence_ratio": 1.0})
    build_in_process([source], str(tmp_path / "out"), recipe, partition="2026-01-01")
    layout, manifest = build_in_process([source], str(tmp_path / "out"), recipe, partition="2026-01-02")
    rejects = pq.read_table(storage.join(layout.version, "rejects.parquet")).to_pylist()
    assert sorted(_name(r) for r in rejects) == sorted(f"{w}.mp3" for w in WORDS[:16:2]), [
        (_name(r), r["reason"], r["detail"]) for r in rejects
    ]
    assert all(r["reason"] == "duplicate:published" for r in rejects)
    assert manifest["samples"] == 8  # the new words, none lost
    check = storage.read_json(storage.join(layout.version, "stats.json"))["dedupe"]["verification"]["audio"]
    assert check["confirmed"] >= 8 and check["unverified"] == 0 and check["confirmed_similarity"][0] >= 0.6


@pytest.mark.slow
def test_landmarks_link_copies_of_real_speech_and_not_distinct_prompts():
    """Real recordings (one woman reading 40 telephone prompts, 8 kHz): each copy of ten of them (re-encoded,
    resampled, louder, quieter, trimmed) shares landmarks with its original at one alignment; two distinct
    prompts, however alike the voice, share too few to be a candidate."""
    prompts = speech(40, min_seconds=1.0)
    ids, marks = [], []
    for n, (name, samples) in enumerate(prompts.items()):
        ids.append(name)
        marks.append(decode_audio(encode_sound(samples, "wav", "pcm_s16le", 8000)).landmarks)
        for edit, make in copies_of(samples, 8000).items() if n < 10 else ():
            ids.append(f"{name}.{edit}")
            marks.append(decode_audio(make()).landmarks)
    pairs = landmark_pairs(ids, marks, DedupeConfig().audio_min_landmarks)
    family = {(a.split(".")[0], b.split(".")[0]) for a, b, _ in pairs}
    assert all(a == b for a, b in family), sorted(p for p in pairs if p[0].split(".")[0] != p[1].split(".")[0])
    linked = {x for a, b, _ in pairs if a.split(".")[0] == b.split(".")[0] for x in (a, b)}
    assert {i for i in ids if "." in i} <= linked


def test_the_guard_searches_wider_than_dedupe_on_every_sound_signal():
    """The wider of two thresholds: a larger bit error rate or print distance, fewer landmarks in common."""
    guard = LeakGuardConfig()
    tight = search_config(DedupeConfig(audio_max_ber=0.01, short_audio_max_db=0.1, audio_min_landmarks=1000), guard)
    assert (tight.audio_max_ber, tight.short_audio_max_db, tight.audio_min_landmarks) == (0.25, 6.0, 3)
    off = search_config(DedupeConfig(audio_max_ber=None, short_audio_max_db=None, audio_min_landmarks=None), guard)
    assert (off.audio_max_ber, off.short_audio_max_db, off.audio_min_landmarks) == (0.25, 6.0, 3)
    loose = search_config(DedupeConfig(audio_max_ber=0.4, audio_min_landmarks=2), guard)
    assert (loose.audio_max_ber, loose.audio_min_landmarks) == (0.4, 2)
