"""Near-duplicate sounds: Chromaprint fingerprints (tasks/media/fingerprint.py) that agree on most bits
at some alignment.

Candidates are items sharing the top 20 bits of two fingerprint values (an inverted index, done by
sorting), or of one when a fingerprint is short (under 16 values, i.e. under ~4 s of sound): every
re-encode and 50 ms trim of real speech we measured shares that much, while two distinct 10 s
clips share two such keys by chance about once in 10^5 pairs. Values that many items share
(hum) are skipped, and silence is 0 in a fingerprint (tasks/media/fingerprint.py) and never a key:
they say nothing about any two items.
Each candidate is verified by its bit error rate at the best alignment within about a second either
way, over at least 60% of the shorter fingerprint.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .bits import equal_keys

KEY_SHIFT = 12  # the low bits of a value flip most under re-encoding
SHORT = 16  # values: a fingerprint this short needs only one shared key
MAX_SHIFT = 8  # frames of ~0.12 s: alignments tried either way
COMMON_VALUE_ITEMS = 64


def bit_error_rate(a: np.ndarray, b: np.ndarray, max_shift: int = MAX_SHIFT) -> float:
    """The least fraction of differing bits over alignments of a and b within max_shift frames, over
    the values where both are sound (0 marks silence), at least 60% of the shorter's."""
    best = 1.0
    need = 0.6 * min(np.count_nonzero(a), np.count_nonzero(b))
    for shift in range(-max_shift, max_shift + 1):
        x, y = (a[shift:], b) if shift >= 0 else (a, b[-shift:])
        n = min(len(x), len(y))
        both = (x[:n] != 0) & (y[:n] != 0)
        if n and both.sum() >= max(need, 1):
            best = min(best, float(np.bitwise_count(x[:n][both] ^ y[:n][both]).sum()) / (32 * both.sum()))
    return best


def fingerprint_pairs(ids: list[str], fingerprints: list[list[int]], max_ber: float) -> list[tuple[str, str, float]]:
    """(a, b, bit error rate) with a < b for items whose fingerprints match within `max_ber`."""
    prints = [np.array(f, dtype=np.uint32) for f in fingerprints]
    keys = [np.unique(p[p != 0] >> np.uint32(KEY_SHIFT)) for p in prints]  # 0: silence, no key
    owner = np.repeat(np.arange(len(keys)), [len(k) for k in keys])
    if len(owner) < 2:
        return []
    values = np.concatenate(keys).astype(np.uint64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    common = counts[inverse] > COMMON_VALUE_ITEMS
    found = []
    for a, b in equal_keys(values, (len(values) - 1).bit_length()):
        keep = ~common[a]
        x, y = owner[a[keep]], owner[b[keep]]
        found.append(np.minimum(x, y) * len(prints) + np.maximum(x, y))
    codes, shared = np.unique(np.concatenate(found), return_counts=True) if found else ([], [])
    pairs = []
    for code, count in zip(np.asarray(codes).tolist(), np.asarray(shared).tolist()):
        x, y = divmod(code, len(prints))
        if count < 2 and min(np.count_nonzero(prints[x]), np.count_nonzero(prints[y])) >= SHORT:
            continue
        if (ber := bit_error_rate(prints[x], prints[y])) <= max_ber:
            pairs.append((*sorted((ids[x], ids[y])), ber))
    return pairs


PRINT_BANDS = 24  # a short sound's print: frames x 24 bands (tasks/media/fingerprint.py)
PRINT_SHIFT = 4  # frames of 23 ms: alignments tried either way (a trim, an encoder's delay)
PRINT_OVERLAP = 0.5  # of the shorter print, at least (a trimmed copy)
PRINT_MIN_OVERLAP = 3  # frames: two frames of two different vowels can look alike
CORE_DB = -6  # a print's loud core: frames whose loudest band is this close to the clip's loudest
MEAN_SLACK_DB = 2.0  # what a copy's core means may differ by beyond `max_db`


def print_distance(a: np.ndarray, b: np.ndarray, max_shift: int = PRINT_SHIFT) -> float:
    """Mean absolute dB difference of two prints (frames x bands) at their best alignment."""
    best = float("inf")
    for shift in range(-max_shift, max_shift + 1):
        x, y = (a[shift:], b) if shift >= 0 else (a, b[-shift:])
        n = min(len(x), len(y))
        if n >= max(PRINT_MIN_OVERLAP, PRINT_OVERLAP * min(len(a), len(b))):
            best = min(best, float(np.abs(x[:n] - y[:n]).mean()))
    return best


def short_sound_pairs(
    ids: list[str], prints: list[list[int]], max_db: float, only: set[str] | None = None
) -> list[tuple[str, str, float]]:
    """(a, b, dB) with a < b for short sounds whose prints match within `max_db` (with `only`: pairs with at
    least one of those). Candidates are within 2x of each other's length and have, band by band, mean
    levels over their loud core (the frames within CORE_DB of the loudest) within `max_db` +
    MEAN_SLACK_DB of each other on average, found by a k-d tree; each is verified. The core is what a
    trim, an encoder's padding or a shift leaves alone (measured on spoken words and their copies: every
    copy's core lies within 6 dB at `max_db` 4)."""
    shaped = [np.array(p, np.float32).reshape(-1, PRINT_BANDS) for p in prints]
    if len(shaped) < 2:
        return []
    cores = np.stack([p[p.max(axis=1) >= CORE_DB].mean(axis=0) for p in shaped])
    tree, radius = cKDTree(cores), PRINT_BANDS * (max_db + MEAN_SLACK_DB)
    if only is None:
        near = tree.query_pairs(radius, p=1, output_type="ndarray").tolist()
    else:
        mine = [i for i, key in enumerate(ids) if key in only]
        found = tree.query_ball_point(cores[mine], radius, p=1) if mine else []
        near = sorted({(min(i, j), max(i, j)) for i, js in zip(mine, found) for j in js if j != i})
    pairs = []
    for i, j in near:
        if not 0.5 <= len(shaped[i]) / len(shaped[j]) <= 2:
            continue
        if (d := print_distance(shaped[i], shaped[j])) <= max_db:
            pairs.append((*sorted((ids[i], ids[j])), d))
    return sorted(pairs)
