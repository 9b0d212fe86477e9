"""A sound's landmarks: pairs of spectral peaks, the signature that finds copies of one recording.

Peaks of a recording's spectrogram (its strongest local maxima, about 16 per quarter second) survive what
copying does to it: re-encoding (MP3, AAC, Opus), another sample rate, gain, a trim. Two peaks close in
time make a landmark, hashed on (first peak's frequency, the frequency step to the second, the time between
them); the first peak's time is kept beside the hash. Copies of one recording share many landmarks at one
time offset; two recordings of one word in two voices, or two noises in one band, share few (their peaks
lie elsewhere). This is the audio-identification scheme of Wang's Shazam paper (2003), as audfprint and
Dejavu implement it; candidate pairs found this way are few enough to verify each on the waveform.

Peaks are picked in two bands, under and over 3.9 kHz, each with its own budget, and only paired within
a band: a copy at 8 kHz has lost the upper band and keeps every landmark of the lower one.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter

from ..similar.landmarks import TIME_BITS

LANDMARK_RATE = 16_000  # sounds are analysed at this rate (content up to 8 kHz)
FFT, HOP = 512, 128  # 32 ms frames (31.25 Hz bins) every 8 ms
LANDMARK_MAX_S = 4.0  # of a sound's start (longer sounds also have a Chromaprint)
SPLIT_BIN = 125  # 3.9 kHz: bins under it are the lower band (an 8 kHz copy keeps them all)
NEIGHBOURHOOD = (7, 5)  # frames x bins (56 ms x 156 Hz): a peak is the loudest within it
FLOOR_DB = -50  # peaks this far under the sound's loudest are noise a codec may add or remove
WINDOW = 16  # frames (128 ms) either way: a peak is kept when fewer than PER_WINDOW stronger ones lie within
PER_WINDOW = 16
FAN_OUT = 4  # landmarks a peak anchors: with the next peaks of its band
MAX_DT = 63  # frames (0.5 s)
MAX_DF = 63  # bins (2 kHz)
# bins: two peaks closer in frequency are most often one steady partial, which any two sounds with a
# note at that pitch share (synthetic syllables shared them at 40x the rate of other landmarks)
MIN_DF = 2


def landmarks(samples: np.ndarray) -> np.ndarray:
    """Landmarks of mono samples at LANDMARK_RATE (floats), as uint32: hash << TIME_BITS | anchor frame;
    sorted, unique. Empty for silence."""
    samples = np.asarray(samples[: int(LANDMARK_MAX_S * LANDMARK_RATE)], np.float32)
    if not len(samples) or not np.any(samples):
        return np.zeros(0, np.uint32)
    padded = np.pad(samples, (FFT // 2, FFT // 2 + FFT))
    frames = np.lib.stride_tricks.sliding_window_view(padded, FFT)[::HOP][: len(samples) // HOP + 1]
    power = np.abs(np.fft.rfft(frames * np.hanning(FFT).astype(np.float32), axis=1)) ** 2
    db = 10 * np.log10(power[:, :256] + 1e-20)
    peak = (db == maximum_filter(db, NEIGHBOURHOOD, mode="constant", cval=-np.inf)) & (db >= db.max() + FLOOR_DB)
    peak[:, :2] = False  # DC and 31 Hz: hum and offsets, not the recording
    out = []
    for band in (slice(0, SPLIT_BIN), slice(SPLIT_BIN, 256)):
        t, f = _strongest(peak[:, band], db[:, band])
        out.append(_pairs(t, f + band.start))
    return np.unique(np.concatenate(out))


def _strongest(peak: np.ndarray, db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The band's peaks (frame, bin) that have fewer than PER_WINDOW stronger peaks within WINDOW frames
    either way, in time order: a choice that a trim or a shift of the sound does not change."""
    t, f = np.nonzero(peak)
    level = db[t, f]
    stronger = np.zeros(len(t), np.int64)
    for step in range(1, len(t)):
        a, b = np.arange(len(t) - step), np.arange(step, len(t))
        near = t[b] - t[a] <= WINDOW
        if not near.any():
            break
        a, b = a[near], b[near]
        np.add.at(stronger, a, level[b] > level[a])
        np.add.at(stronger, b, level[a] > level[b])
    keep = stronger < PER_WINDOW
    return t[keep], f[keep]


def _pairs(t: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Each peak with up to FAN_OUT of the next peaks (in time) within MAX_DT frames and MAX_DF bins."""
    found, taken = [], np.zeros(len(t), np.int64)
    for step in range(1, len(t)):
        a, b = np.arange(len(t) - step), np.arange(step, len(t))
        dt, df = t[b] - t[a], f[b] - f[a]
        if not np.any(dt <= MAX_DT):
            break
        ok = (dt >= 1) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF) & (np.abs(df) >= MIN_DF) & (taken[a] < FAN_OUT)
        taken[a[ok]] += 1
        # 8 bits first peak's frequency, 7 bits the step to the second, 6 bits the time between them
        code = (f[a[ok]].astype(np.uint32) << 13) | ((df[ok] + 64).astype(np.uint32) << 6) | dt[ok].astype(np.uint32)
        found.append(code << TIME_BITS | t[a[ok]].astype(np.uint32))
    return np.concatenate(found) if found else np.zeros(0, np.uint32)
