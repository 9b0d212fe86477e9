"""Whether two sounds are one recording, judged on the signal: their waveforms lined up at the best lag,
then compared window by window.

Prints (Chromaprint, a short sound's coarse log-mel: tasks/similar/sounds.py) find candidates; they are
too coarse to tell two recordings apart (two noises with similar bands, one word in two voices, "tree"
and "three"). Copies of one recording keep its waveform: re-encoded to MP3, AAC or Opus, resampled,
trimmed, or made louder or quieter, the two still line up sample for sample at one lag, and every
stretch of them correlates near 1 there. Two different recordings do not: even where one synthetic
voice says one vowel in two words (the waveforms of "dog" and "on" agree on their "o"), the rest
disagrees. So the score is the worst normalised correlation over the 40 ms windows where both are
audible, at the lag (found to a quarter sample) where the whole correlates best.

Both sounds are compared band-limited to what the poorer one holds (the caller resamples both to one
rate), after a first difference (pre-emphasis) so a voice's few loudest low harmonics do not decide alone.
"""

from __future__ import annotations

import functools

import numpy as np

MAX_LAG_S = 1.0  # a trim, an encoder's delay or padding: alignments tried either way
MIN_OVERLAP = 0.8  # of the shorter sound, at least (a copy trimmed at both ends still overlaps most of it)
MAX_COMPARED_S = 30.0  # of each sound, from its start: a long recording's copy shows within its first half minute
PRE_EMPHASIS = 0.95
WINDOW_S = 0.04
AUDIBLE_DB = -25.0  # a window this far under the loudest (in both sounds) is too quiet to judge by
SINC_TAPS = 16  # neighbours of the best whole lag that place it between samples
# the whole's correlation at the best lag under this: not one recording, without looking window by window
# (copies measured 0.9 and more as a whole)
WHOLE_FLOOR = 0.3


class Sound:
    """One sound's samples ready to correlate (no DC offset, pre-emphasised), with what every comparison
    of it needs computed once: its running energy, and its spectrum at each transform size asked."""

    def __init__(self, samples: np.ndarray, rate: int):
        self.x = comparable(samples[: int(MAX_COMPARED_S * rate)])
        self.rate = rate
        self.energy = np.concatenate([[0.0], np.cumsum(self.x * self.x)])

    def __len__(self) -> int:
        return len(self.x)

    @functools.lru_cache(maxsize=2)  # noqa: B019 (a Sound lives as long as the check that compares it)
    def spectrum(self, n: int) -> np.ndarray:
        return np.fft.rfft(self.x, n)


def comparable(samples: np.ndarray) -> np.ndarray:
    """Mono float samples ready to correlate: no DC offset, pre-emphasised (what `Sound` holds)."""
    x = np.asarray(samples, np.float64)
    x = x - x.mean() if len(x) else x
    return np.append(x[:1], x[1:] - PRE_EMPHASIS * x[:-1])


def similarity(a: Sound, b: Sound, rate: int, max_lag_s: float = MAX_LAG_S) -> float:
    """1 for the same waveform (up to gain and polarity), near 0 for unrelated ones: the least normalised
    correlation over audible windows, at the best lag within `max_lag_s` whose overlap covers MIN_OVERLAP
    of the shorter sound. `a`, `b`: Sounds at `rate`."""
    if min(len(a), len(b)) < 2:
        return 0.0
    # one transform size for every pair of sounds of like lengths, so each sound's spectrum is reused
    n = 1 << (2 * max(len(a), len(b)) - 1).bit_length()
    spectrum_b = b.spectrum(n)
    cross = a.spectrum(n) * np.conj(spectrum_b)
    found = _best_lag(cross, a, b, n, rate * max_lag_s)
    if found is None or found[1] < WHOLE_FLOOR:
        return 0.0
    lag = found[0]
    # b moved by the (fractional) lag, so that moved[i] = b[i - lag] lines up with a[i]
    moved = np.fft.irfft(spectrum_b * np.exp(-2j * np.pi * np.fft.rfftfreq(n) * lag), n)
    start, stop = max(0, int(np.ceil(lag))), min(len(a), int(np.floor(lag)) + len(b))
    x, y = a.x[start:stop], moved[start:stop]
    width = max(int(WINDOW_S * rate), 8)
    whole = len(x) // width * width
    if whole == 0:
        return 0.0
    x, y = x[:whole].reshape(-1, width), y[:whole].reshape(-1, width)
    power_x, power_y = (x * x).sum(axis=1), (y * y).sum(axis=1)
    floor = 10 ** (AUDIBLE_DB / 10)
    audible = (power_x >= floor * power_x.max()) & (power_y >= floor * power_y.max())
    if not audible.any():
        return 0.0
    scores = (x * y).sum(axis=1)[audible] / np.sqrt(power_x[audible] * power_y[audible])
    return float(np.clip(np.abs(scores).min() if np.all(scores * scores[0] > 0) else 0.0, 0.0, 1.0))


def whole_correlation(a: Sound, b: Sound, rate: int, max_lag_s: float = MAX_LAG_S) -> float:
    """The normalised |correlation| of the two sounds as a whole at their best lag (0 when no lag is
    allowed): a cheap first look, since copies correlate near 1 as a whole too."""
    if min(len(a), len(b)) < 2:
        return 0.0
    n = 1 << (2 * max(len(a), len(b)) - 1).bit_length()
    found = _best_lag(a.spectrum(n) * np.conj(b.spectrum(n)), a, b, n, rate * max_lag_s)
    return 0.0 if found is None else min(found[1], 1.0)


def _best_lag(cross: np.ndarray, a: Sound, b: Sound, n: int, max_lag: float) -> tuple[float, float] | None:
    """The lag k (a[i + k] against b[i]) of the largest normalised |correlation| among those allowed, and that
    correlation. Searched at half samples: a copy made from a trimmed or resampled file lies between the
    other's samples, and at whole samples only, with the upper band emphasised, a neighbouring lobe of the
    wrong sign can outweigh the true peak; then refined to a quarter sample by a windowed sinc over the
    correlation (band-limited). `cross`: rfft(a) * conj(rfft(b)), size n."""
    half = np.fft.irfft(cross, 2 * n) * 2  # half[2k] is the correlation at lag k, half[2k + 1] between
    steps = np.arange(-2 * (len(b) - 1), 2 * (len(a) - 1) + 1)
    steps = steps[np.abs(steps) <= 2 * max_lag]
    lags = steps // 2  # a half-sample lag's overlap and energies: those of the whole lag below it
    a_start, b_start = np.maximum(lags, 0), np.maximum(-lags, 0)
    overlap = np.minimum(len(a) - a_start, len(b) - b_start)
    power = (a.energy[a_start + overlap] - a.energy[a_start]) * (b.energy[b_start + overlap] - b.energy[b_start])
    usable = (overlap >= MIN_OVERLAP * min(len(a), len(b))) & (power > 0)
    if not usable.any():
        return None
    values = np.abs(half[steps[usable] % (2 * n)]) / np.sqrt(power[usable])
    at = int(np.argmax(values))
    best = steps[usable][at] / 2
    dots = half[::2]
    taps = np.floor(best).astype(int) + np.arange(-SINC_TAPS, SINC_TAPS + 1)
    offsets = best + np.array([-0.25, 0.0, 0.25])
    kernel = np.sinc(offsets[:, None] - taps) * np.hanning(2 * SINC_TAPS + 3)[1:-1]
    return float(offsets[np.argmax(np.abs(kernel @ dots[taps % n]))]), float(values[at])
