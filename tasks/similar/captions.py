"""Near-duplicate captions: texts whose word 3-shingle sets have a Jaccard similarity at or above a
threshold, by MinHash LSH, vectorized.

Each text becomes the set of its lower-cased word 3-shingles, each shingle a 32-bit CRC. A MinHash
signature holds, for each of `num_perm` hash functions (multiply-shift: (a*x + b) >> 32 with odd
64-bit a), the least value over the set; two sets agree at one position with probability equal to
their Jaccard similarity. The signature is cut into b bands of r rows (b and r chosen as datasketch
chooses them, with a missed pair weighing 9 times a needless candidate); texts
whose band agrees on all r rows meet when the band's keys are sorted. Every candidate is verified
on its exact shingle sets, so no pair below the threshold is returned.

Whole-array numpy instead of one Python object per text: bench/dedupe.py measures it against
datasketch's MinHashLSH with the same threshold and num_perm on 1M captions.
"""

from __future__ import annotations

import re
import zlib
from functools import cache

import numpy as np

from .bits import equal_keys

WORD = re.compile(r"\w+")
_CHUNK = 1 << 20  # shingles per block of signature work (x 32 permutations x 8 bytes = 256 MB)


def normalize(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def shingle_hashes(text: str, n: int = 3) -> np.ndarray:
    """Sorted distinct CRC-32s of the word n-shingles of a normalized text (a shorter text is one shingle)."""
    words = text.split()
    if not words:
        return np.empty(0, np.uint64)
    grams = [" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))]
    return np.unique(np.fromiter((zlib.crc32(g.encode()) for g in grams), np.uint64, len(grams)))


def signatures(sets: list[np.ndarray], num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """MinHash signatures, (len(sets), num_perm) uint32; every set must be non-empty."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2 ** 63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2 ** 63, num_perm, dtype=np.uint64)
    lengths = np.array([len(s) for s in sets])
    values = np.concatenate(sets)
    owner = np.repeat(np.arange(len(sets)), lengths)
    out = np.full((len(sets), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    for start in range(0, len(values), _CHUNK):
        block, who = values[start:start + _CHUNK], owner[start:start + _CHUNK]
        firsts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])  # each set's first row in this block
        for p in range(0, num_perm, 32):
            hashed = ((block[:, None] * a[None, p:p + 32] + b[None, p:p + 32]) >> np.uint64(32)).astype(np.uint32)
            mins = np.minimum.reduceat(hashed, firsts, axis=0)
            rows = who[firsts]
            out[rows, p:p + 32] = np.minimum(out[rows, p:p + 32], mins)
    return out


@cache
def lsh_bands(threshold: float, num_perm: int, weights: tuple[float, float] = (0.1, 0.9)) -> tuple[int, int]:
    """(bands, rows) minimizing the weighted false positive plus false negative mass around the threshold,
    as datasketch's MinHashLSH(weights=...) chooses them. Candidates are verified exactly, so a false
    positive costs only time and a false negative a missed copy: missing weighs 9 times more."""
    def area(f, lo, hi):
        x = np.linspace(lo, hi, 201)
        return float(np.trapezoid(f(x), x))

    best = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = area(lambda s: 1 - (1 - s ** rows) ** bands, 0.0, threshold)
            fn = area(lambda s: (1 - s ** rows) ** bands, threshold, 1.0)
            cost = weights[0] * fp + weights[1] * fn
            if best is None or cost < best[0]:
                best = (cost, bands, rows)
    return best[1], best[2]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    both = len(np.intersect1d(a, b, assume_unique=True))
    return both / (len(a) + len(b) - both)


def caption_pairs(keys: list[str], texts: list[str], threshold: float, num_perm: int = 128,
                  seed: int = 1) -> list[tuple[str, str, float]]:
    """(a, b, jaccard) with a < b for keys whose texts' shingle sets are at least `threshold` alike.
    Keys with the same normalized text pair with the first of them at 1.0."""
    by_text: dict[str, list[str]] = {}
    for key, text in sorted(zip(keys, texts)):
        by_text.setdefault(normalize(text), []).append(key)
    pairs = [(same[0], other, 1.0) for same in by_text.values() for other in same[1:]]
    firsts, sets = [], []
    for text, same in by_text.items():
        hashes = shingle_hashes(text)
        if len(hashes):
            firsts.append(same[0])
            sets.append(hashes)
    if len(sets) < 2:
        return pairs
    signature = signatures(sets, num_perm, seed)
    bands, rows = lsh_bands(threshold, num_perm)
    rng = np.random.default_rng(seed + 1)
    weights = rng.integers(0, 2 ** 63, rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    id_bits = (len(sets) - 1).bit_length()
    candidates = []
    for band in range(bands):
        keys_of_band = (signature[:, band * rows:(band + 1) * rows].astype(np.uint64) * weights).sum(axis=1)
        candidates += [np.minimum(x, y) * len(sets) + np.maximum(x, y) for x, y in equal_keys(keys_of_band, id_bits)]
    if not candidates:
        return pairs
    found = np.unique(np.concatenate(candidates))
    for x, y in zip((found // len(sets)).tolist(), (found % len(sets)).tolist()):
        similarity = jaccard(sets[x], sets[y])
        if similarity >= threshold:
            pairs.append((*sorted((firsts[x], firsts[y])), similarity))
    return pairs
