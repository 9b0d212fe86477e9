"""Audio cleaning on real speech: every common container and codec decodes, torchaudio resamples and
mixes down, the log-mel spectrogram is published with its parameters, and loudness, silence and
clipping are measured and filtered on."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tasks.media import MediaError
from tasks.media.audio import AudioPreset, decode_audio
from tasks.similar.sounds import bit_error_rate
from tasks.stages.clean import CleanStage
from tasks.stages.filter import FilterStage

from .helpers import sample
from .realmedia import encode_sound, pcm, speech
from .test_stages import run


@pytest.fixture(scope="module")
def prompt() -> np.ndarray:
    return next(iter(speech(1, min_seconds=5.0).values()))  # 8 kHz int16, a woman speaking


# (Vorbis is missing: PyAV's FFmpeg decodes it but has no encoder to make a test file with.)
CODECS = {
    "wav": ("wav", "pcm_s16le", 8000),
    "flac": ("flac", "flac", 16000),
    "mp3": ("mp3", "libmp3lame", 22050),
    "ogg-opus": ("ogg", "libopus", 48000),
    "m4a-aac": ("ipod", "aac", 16000),
    "webm-opus": ("webm", "libopus", 48000),
}


@pytest.mark.parametrize("name", sorted(CODECS))
def test_every_common_container_and_codec_decodes_to_the_same_recording(prompt, name):
    fmt, codec, rate = CODECS[name]
    decoded = decode_audio(encode_sound(prompt, fmt, codec, rate))
    # lossy encoders add their priming and padding (AAC 2,112 samples): up to ~0.15 s
    assert decoded.duration_s == pytest.approx(len(prompt) / 8000, abs=0.15)
    assert decoded.sample_rate == rate and decoded.channels == 1 and decoded.ext == "flac"
    reference = decode_audio(encode_sound(prompt, "wav", "pcm_s16le", 8000)).fingerprint
    assert bit_error_rate(np.array(decoded.fingerprint, np.uint32), np.array(reference, np.uint32)) < 0.1


def stereo_44k(samples: np.ndarray) -> bytes:
    """The prompt as 44.1 kHz stereo WAV, the right channel at half level."""
    import av

    upsampled = pcm(encode_sound(samples, "wav", "pcm_s16le", 44100), rate=44100)
    both = np.stack([upsampled, upsampled // 2])
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=44100, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(both.T.reshape(1, -1)), format="s16", layout="stereo")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def test_the_preset_resamples_to_mono_16k_and_publishes_a_log_mel(prompt):
    data = stereo_44k(prompt)
    preset = AudioPreset(sample_rate=16000, mono=True, log_mel=(("hop_length", 256), ("n_fft", 1024), ("n_mels", 80)))
    decoded = decode_audio(data, preset)
    assert (decoded.sample_rate, decoded.channels) == (16000, 1)
    published = decode_audio(decoded.data)
    assert (published.sample_rate, published.channels) == (16000, 1)
    assert published.duration_s == pytest.approx(len(prompt) / 8000, abs=0.01)
    original = decode_audio(data).fingerprint
    assert bit_error_rate(np.array(published.fingerprint, np.uint32), np.array(original, np.uint32)) < 0.05

    mel = np.load(io.BytesIO(decoded.mel))
    frames = 1 + int(published.duration_s * 16000 + 0.5) // 256
    assert mel.dtype == np.float16 and mel.shape == (80, frames)
    assert decoded.mel_params == {
        "n_mels": 80,
        "n_fft": 1024,
        "hop_length": 256,
        "sample_rate": 16000,
        "frames": frames,
        "dtype": "float16",
        "log": "natural, of power + 1e-6",
    }
    assert np.isfinite(mel.astype(np.float32)).all() and mel.astype(np.float32).std() > 1  # speech, not a flat line


def test_a_flac_that_needs_no_change_is_published_as_it_came(prompt):
    data = encode_sound(prompt, "flac", "flac", 8000)
    assert decode_audio(data).data == data
    assert decode_audio(data, AudioPreset(sample_rate=16000)).data != data


def test_loudness_silence_and_clipping_are_measured(prompt):
    speech_scores = decode_audio(encode_sound(prompt, "wav", "pcm_s16le", 8000)).scores
    padded = np.concatenate([prompt, np.zeros(8000 * 10, np.int16)])  # ten seconds of nothing after it
    padded_scores = decode_audio(encode_sound(padded, "wav", "pcm_s16le", 8000)).scores
    assert padded_scores["silence_ratio"] > 0.6 > speech_scores["silence_ratio"]
    loud = np.clip(prompt.astype(np.int32) * 8, -32768, 32767).astype(np.int16)
    assert decode_audio(encode_sound(loud, "wav", "pcm_s16le", 8000)).scores["clipping_ratio"] > 0.01
    assert speech_scores["clipping_ratio"] < 0.001
    tone = (0.1 * 32767 * np.sin(2 * np.pi * 440 * np.arange(16000) / 8000)).astype(np.int16)
    assert decode_audio(encode_sound(tone, "wav", "pcm_s16le", 8000)).scores["rms_dbfs"] == pytest.approx(
        -23.0, abs=0.1
    )


def test_clean_publishes_the_mel_beside_the_clip_and_filters_judge_silence_and_clipping(prompt):
    stage = CleanStage(
        audio={"sample_rate": 16000, "mono": True},
        features={"log_mel": {"n_mels": 64, "n_fft": 512, "hop_length": 160}},
    )
    silent = np.concatenate([prompt[:8000], np.zeros(8000 * 20, np.int16)])
    loud = np.clip(prompt.astype(np.int32) * 8, -32768, 32767).astype(np.int16)
    rows = [
        sample("audio", "a woman speaks", media=encode_sound(s, "wav", "pcm_s16le", 8000), n=n)
        for n, s in enumerate((prompt, silent, loud))
    ]
    kept, rejected = run(stage, *rows)
    assert not rejected and all(r["sidecars"][0]["name"] == "mel.npy" for r in kept)
    assert '"n_mels": 64' in kept[0]["features"]
    kept, rejected = run(FilterStage(), *kept)
    assert [r["reason"] for r in rejected] == ["filter:mostly_silent", "filter:clipped"]
    assert [s["name"] for s in kept[0]["scores"]] == [
        "bandwidth_hz",
        "clipping_ratio",
        "duration_s",
        "rms_dbfs",
        "sample_rate",
        "silence_ratio",
    ]


def test_broken_audio_is_a_reject_with_a_reason(prompt):
    mp3 = encode_sound(prompt, "mp3", "libmp3lame", 16000)
    garbled = mp3[:400] + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)) + mp3[4400:4800]
    header_only = encode_sound(prompt, "wav", "pcm_s16le", 8000)[:44]
    for data, codes in (
        (garbled, {"corrupt", "empty", "truncated"}),
        (header_only, {"empty", "corrupt", "truncated"}),
        (b"", {"corrupt"}),
    ):
        with pytest.raises(MediaError) as e:
            decode_audio(data)
        assert e.value.code in codes, (e.value.code, e.value.detail)
