"""Sounds that share landmarks at one alignment (tasks/media/landmarks.py): candidate copies of one recording.

An inverted index done by sorting: every landmark's hash, owner and time, sorted by hash; items whose
landmarks hash alike are paired, with the time between the two (the offset one would have to shift by to
line them up). Copies of one recording share many landmarks at one offset; a chance likeness shares a few
scattered over many. A pair is a candidate when at least `min_common` landmarks agree on the offset
(within a frame either way: a trim moves peaks by part of a frame), and they are at least MIN_SHARE of
the smaller sound's landmarks: a long sound holds a thousand, and two prompts read by one voice share
a few by chance (measured: copies of real speech 30% and more, of espeak-ng words and of noise bursts
12% and more; distinct prompts of one speaker 2.5% at most).

Hashes that many landmarks share (steady tones, hum, one synthetic voice's vowels) are skipped: they say
little about which two items are one, and pairing all their owners grows as the square.
"""

from __future__ import annotations

import numpy as np

TIME_BITS = 11  # a landmark is hash << TIME_BITS | its anchor's frame (tasks/media/landmarks.py)
MIN_SHARE = 0.05
COMMON_HASH = 64  # landmarks: a hash this common is skipped
OFFSET_SPAN = 2 << TIME_BITS  # offsets -2047..2047 frames, shifted to be positive


def landmark_pairs(ids: list[str], marks: list[list[int]], min_common: int) -> list[tuple[str, str, int]]:
    """(a, b, landmarks in common at the best offset) with a < b, for pairs with at least `min_common` and
    MIN_SHARE of the smaller one's."""
    arrays = [np.asarray(m, np.uint32) for m in marks]
    owner = np.repeat(np.arange(len(arrays), dtype=np.int64), [len(m) for m in arrays])
    if len(owner) < 2:
        return []
    values = np.concatenate(arrays)
    hashes = values >> np.uint32(TIME_BITS)
    order = np.argsort(hashes, kind="stable")
    hashes, owner, time = hashes[order], owner[order], (values[order] & ((1 << TIME_BITS) - 1)).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]])
    sizes = np.diff(np.r_[starts, len(hashes)])
    size = np.repeat(sizes, sizes)
    keep = size <= COMMON_HASH
    hashes, owner, time, size = hashes[keep], owner[keep], time[keep], size[keep]
    codes = []
    for step in range(1, COMMON_HASH):
        live = np.flatnonzero(size[:-step] > step)  # entries with a step-th neighbour in a bucket this large
        if not len(live):
            break
        live = live[hashes[live] == hashes[live + step]]
        a, b = owner[live], owner[live + step]
        apart = a != b
        a, b, offset = a[apart], b[apart], (time[live + step] - time[live])[apart]
        offset = np.where(a < b, offset, -offset) + (OFFSET_SPAN // 2)
        codes.append((np.minimum(a, b) * len(arrays) + np.maximum(a, b)) * OFFSET_SPAN + offset)
    code, count = np.unique(np.concatenate(codes), return_counts=True) if codes else (np.zeros(0, np.int64), None)
    if not len(code):
        return []
    # counts within a frame either way of each offset
    around = count.copy()
    for shift in (-1, 1):
        at = np.searchsorted(code, code + shift)
        found = (at < len(code)) & (code[np.minimum(at, len(code) - 1)] == code + shift)
        around[found] += count[at[found]]
    pair = code // OFFSET_SPAN
    firsts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    best = np.maximum.reduceat(around, firsts)
    sizes = np.array([len(m) for m in arrays])
    x, y = np.divmod(pair[firsts], len(arrays))
    enough = (best >= min_common) & (best >= MIN_SHARE * np.minimum(sizes[x], sizes[y]))
    return sorted(
        (*sorted((ids[a], ids[b])), n) for a, b, n in zip(x[enough].tolist(), y[enough].tolist(), best[enough].tolist())
    )
