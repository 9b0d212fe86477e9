"""Voice activity on real and synthetic sound: speech told from music, noise and silence; speech found at
its times inside a real recording padded with noise; a recording trimmed to its speech; a video's sound
track; the filter's bounds, set per source."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.media.audio import encode_flac
from tasks.media.speech import listen
from tasks.recipe import Recipe
from tasks.stages.clean import CleanStage
from tasks.stages.filter import FilterStage

from .helpers import sample
from .realmedia import ESPEAK_RATE, encode_sound, photo_video, skimage_photos, speech, spoken
from .test_stages import run

RATE = 16_000
PAD_S = 3.0


def flac(samples: np.ndarray, rate: int = RATE) -> bytes:
    return encode_flac(np.asarray(samples, np.float32)[None], rate)


def music(seconds: float, seed: int = 0) -> np.ndarray:
    """Notes of a few harmonics each, a new pitch every quarter second, with an attack and decay."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * 0.25)) / RATE
    notes = []
    for _ in range(int(seconds * 4)):
        f = 220 * 2 ** (rng.integers(0, 24) / 12)
        tone = sum(np.sin(2 * np.pi * f * k * t) / k for k in (1, 2, 3, 4))
        notes.append(0.2 * tone * np.exp(-6 * t) * np.minimum(t / 0.01, 1))
    return np.concatenate(notes)


def noise_padded(prompt: np.ndarray, seed: int = 0) -> np.ndarray:
    """An 8 kHz prompt as float at 16 kHz between PAD_S seconds of low noise on each side."""
    voice = np.repeat(prompt.astype(np.float32) / 32768, 2)  # 8 -> 16 kHz: the model hears up to 4 kHz of it either way
    pad = np.random.default_rng(seed).normal(0, 0.01, int(PAD_S * RATE)).astype(np.float32)
    return np.concatenate([pad, voice, pad])


def test_speech_is_told_from_music_noise_and_silence():
    """espeak-ng sentences and real prompts read by a person speak most of the time; music, noise and silence
    never (measured: speech 0.75-1.0, the rest 0.0)."""
    rng = np.random.default_rng(1)
    voices = [spoken("the quick brown fox jumps over the lazy dog", voice) for voice in ("en-us", "en-gb")]
    talk = [flac(v.astype(np.float32) / 32768, ESPEAK_RATE) for v in voices]
    talk += [encode_sound(p, "wav", "pcm_s16le", 8000) for p in speech(3).values()]
    others = [flac(music(6.0)), flac(rng.normal(0, 0.1, RATE * 6)), flac(np.zeros(RATE * 6)), flac(music(4.0, 2) * 3)]
    ratios = [listen(data).ratio for data in talk], [listen(data).ratio for data in others]
    assert min(ratios[0]) > 0.6 and max(ratios[1]) < 0.05, ratios


def test_speech_is_found_at_its_times_inside_noise():
    """Real prompts with 3 s of noise before and after: the segments (none in the noise) start within 0.2 s
    of where the voice does and end within 0.45 s of where it stops (measured: starts -0.04 to +0.06 s, ends
    +0.1 to +0.33 s: the model hears a voice's last decay, then waits out 0.1 s of quiet)."""
    for prompt in speech(4).values():
        loud = np.flatnonzero(np.abs(prompt) > 0.02 * 32768) / 8000  # where the voice is, in the prompt
        found = listen(flac(noise_padded(prompt))).segments
        assert found, "no speech found"
        assert abs(found[0][0] - (PAD_S + loud[0])) < 0.2 and 0 < found[-1][1] - (PAD_S + loud[-1]) < 0.45, found
        starts = [s for s, _ in found]  # in order, apart, none in the noise before
        assert starts[0] > PAD_S - 0.1 and all(e < s for (_, e), s in zip(found, starts[1:])), found


def test_clean_measures_speech_trims_to_it_and_the_filter_judges_it():
    prompt = next(iter(speech(1).values()))
    padded = sample("audio", media=flac(noise_padded(prompt)), n=0, clip_start_s=10.0, clip_end_s=10.0 + 2 * PAD_S)
    melody = sample("audio", media=flac(music(5.0)), n=1)
    kept, rejected = run(CleanStage(audio={"voice_activity": True}), padded, melody)
    assert not rejected
    ratios = {r["sample_id"]: {s["name"]: s["value"] for s in r["scores"]}["speech_ratio"] for r in kept}
    assert ratios[padded["sample_id"]] > 0.2 and ratios[melody["sample_id"]] == 0.0, ratios
    assert json.loads(kept[0]["features"])["speech"][0][0] > PAD_S - 0.1
    kept_speech, rejected = run(FilterStage(min_speech_ratio=0.1), *kept)
    assert [r["sample_id"] for r in kept_speech] == [padded["sample_id"]]
    assert rejected[0]["reason"] == "filter:too_little_speech" and "speech_ratio=0" in rejected[0]["detail"]

    trimmed, _ = run(CleanStage(audio={"voice_activity": True, "trim_to_speech": True}), padded)
    item = trimmed[0]
    segments = json.loads(item["features"])["speech"]
    assert segments[0][0] == 0.0 and abs(segments[-1][1] - item["duration_s"]) < 0.05, segments
    voice = np.flatnonzero(np.abs(prompt) > 0.02 * 32768) / 8000
    assert voice[-1] - voice[0] < item["duration_s"] < voice[-1] - voice[0] + 0.5  # the noise is gone, the voice kept
    start, end = 10.0 + PAD_S + voice[0], 10.0 + PAD_S + voice[-1]  # the voice, in the source's time
    assert abs(item["clip_start_s"] - start) < 0.2 and 0 < item["clip_end_s"] - end < 0.45
    assert item["audio_codec"] == "flac" and item["sha256"] != kept[0]["sha256"]
    whole, _ = run(CleanStage(audio={"voice_activity": True, "trim_to_speech": True}), melody)
    assert whole[0]["clip_start_s"] is None and whole[0]["duration_s"] == pytest.approx(5.0, abs=0.01)


def test_a_videos_sound_track_is_listened_to():
    prompt = next(iter(speech(1, min_seconds=4).values()))
    photo = skimage_photos(("astronaut",))["astronaut"]
    talking = sample("video", media=photo_video(photo, (160, 120), seconds=4.0, track=prompt), n=0)
    silent = sample("video", media=photo_video(photo, (160, 120), seconds=4.0), n=1)
    kept, rejected = run(CleanStage(video={"voice_activity": True}), talking, silent)
    assert not rejected
    scores = [{s["name"]: s["value"] for s in r["scores"]} for r in kept]
    assert scores[0]["speech_ratio"] > 0.3 and "speech_ratio" not in scores[1], scores
    assert "speech" not in json.loads(kept[1]["features"] or "{}")


def test_each_source_can_judge_by_its_own_thresholds():
    """One recipe, a speech source and a sound-event source: the first rejects what has too little speech,
    the second what has too much, and any other source goes by the recipe's filter."""
    rows = [
        {**sample("audio", n=i, duration_s=5.0, sample_rate=16000, scores=[{"name": "speech_ratio", "value": v}]),
         "source": source}
        for i, (source, v) in enumerate([("talk", 0.9), ("talk", 0.05), ("events", 0.9), ("events", 0.05), ("t", 0.9)])
    ]  # fmt: skip
    stage = FilterStage(by_source={"talk": {"min_speech_ratio": 0.5}, "events": {"max_speech_ratio": 0.2}})
    kept, rejected = run(stage, *rows)
    assert [r["source_rows"][0] for r in kept] == [0, 3, 4]
    assert [r["reason"] for r in rejected] == ["filter:too_little_speech", "filter:too_much_speech"]

    sources = [
        {"name": "talk", "kind": "manifest", "uri": "a.jsonl", "filter": {"min_speech_ratio": 0.5}},
        {"name": "events", "kind": "manifest", "uri": "b.jsonl", "filter": {"max_speech_ratio": 0.2}},
    ]
    recipe = Recipe.model_validate({"name": "t", "sources": sources, "clean": {"audio": {"voice_activity": True}}})
    assert recipe.filtering.by_source == {"talk": {"min_speech_ratio": 0.5}, "events": {"max_speech_ratio": 0.2}}
    with pytest.raises(
        ValueError,
        match="source talk.s filter.min_speech_ratio judges the speech_ratio score: set clean.audio.voice_activity",
    ):
        Recipe.model_validate({"name": "t", "sources": sources})
    wrong = [{**sources[0], "filter": {"min_speech_ratios": 0.5}}]
    with pytest.raises(ValueError, match="source talk.s filter: min_speech_ratios: Extra inputs are not permitted"):
        Recipe.model_validate({"name": "t", "sources": wrong, "clean": {"audio": {"voice_activity": True}}})
    with pytest.raises(ValueError, match="trim_to_speech trims to the speech voice_activity finds"):
        Recipe.model_validate({"name": "t", "sources": sources, "clean": {"audio": {"trim_to_speech": True}}})


def test_the_segments_are_silero_s_own_on_real_prompts():
    """tasks/media/speech.py runs Silero's sequence export in one call and turns its probabilities into segments
    with Silero's rules written again: on real prompts padded with noise they are `get_speech_timestamps`'s
    (Silero's own code, its ONNX model chunk by chunk), to the millisecond (measured: identical)."""
    import torch

    threads = torch.get_num_threads()
    from silero_vad import get_speech_timestamps, load_silero_vad  # its import sets torch to one thread

    torch.set_num_threads(threads)
    model = load_silero_vad(onnx=True)
    for prompt in speech(6).values():
        samples = noise_padded(prompt)
        ours = listen(flac(samples)).segments
        theirs = get_speech_timestamps(torch.from_numpy(samples), model, return_seconds=True, time_resolution=3)
        assert len(ours) == len(theirs), (ours, theirs)
        for (start, end), cut in zip(ours, theirs):
            assert abs(start - cut["start"]) <= 0.001 and abs(end - cut["end"]) <= 0.001, (ours, theirs)
