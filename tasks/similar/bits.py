"""Near-duplicate 64-bit hashes (image pHashes, video keyframe pHashes), found without comparing
every hash with every other.

Bit-sampling LSH, done with sorts: a table keeps k randomly chosen bits of every hash; hashes whose
kept bits agree fall next to each other when the table is sorted, and every such pair is verified on
all 64 bits (so nothing farther than the radius is ever returned). Two hashes d bits apart agree on
k random bits with probability C(64-d, k) / C(64, k); enough tables make the chance that a pair within
the radius meets in none of them smaller than 1 - recall (0.1% by default, per pair: a cluster of
three copies is missed only if two of its three pairs are). k and the number of tables are chosen
for the input's size: few short keys for thousands of hashes, longer keys and more tables for
millions (bench/dedupe.py measures 1M and 10M). The tables' bits come from a fixed seed, so a run
is reproducible. Identical hashes are collapsed first, so a flood of blank images is one entry.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import pyarrow.compute as pc

_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads a key over the top bits
COMMON_FRAME_ITEMS = 64  # a keyframe hash in more videos than this is not evidence of a copy
MIN_KEYFRAMES = 3  # a clip under ~2 s is a frame or two: too little to tell a copy from a look-alike


# What a table costs, in units of one hash sorted (~20 ns at 10M here): a pair that collides by chance
# is verified at ~110 ns (two random reads of its hashes), and each table has a fixed ~50 us of calls.
# Weighing a pair like a sorted hash chose 23 bits and 317 tables at 10M, 1.2 s a table (6-9M chance
# pairs each); this weighing chooses 25 bits and 494 tables, 0.38 s a table (timed a table at a time;
# bench/dedupe.py, radius 8: 10M 252 -> 225 s, 1M 11.6 -> 5.2 s).
_PAIR_COST = 5
_TABLE_COST = 2500


def bit_sampling_plan(n: int, radius: int, recall: float) -> tuple[int, int]:
    """(bits per table, tables) for n distinct hashes: each table costs a sort of n keys plus the pairs
    that collide by chance (n^2 / 2^(k+1) for well-spread hashes); the cheapest plan meeting recall."""
    best = None
    for bits in range(1, 64 - radius):
        hit = math.comb(64 - radius, bits) / math.comb(64, bits)  # the k kept bits avoid all d differing ones
        tables = max(1, math.ceil(math.log(1 - recall) / math.log1p(-hit))) if hit < 1 else 1
        cost = tables * (_TABLE_COST + n + _PAIR_COST * n * n / 2 ** (bits + 1))
        if best is None or cost < best[0]:
            best = (cost, bits, tables)
    return best[1], best[2]


def distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted: `np.unique` by a sort. NumPy 2.4's `np.unique` hashes, and here that
    is 50-75x slower on millions of integers (5M int64: 5.0 s against 0.065 s)."""
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


def equal_keys(keys: np.ndarray, id_bits: int, positions: np.ndarray | None = None):
    """Yield (a, b) index arrays of every pair of positions whose uint64 keys are equal after mixing.
    Key and position share one uint64 so a plain sort (no argsort) groups them. `keys` is overwritten
    in place (at 10M each pass is 80 MB): pass a copy to keep it; `positions`, np.arange(len(keys)) as
    uint64, may be reused across calls."""
    n = len(keys)
    position = np.uint64((1 << id_bits) - 1)
    packed = keys
    np.multiply(packed, _MIX, out=packed)  # the key's bits spread over the top, the position below
    np.bitwise_and(packed, ~position, out=packed)
    np.bitwise_or(packed, np.arange(n, dtype=np.uint64) if positions is None else positions, out=packed)
    packed.sort()
    run, step = np.flatnonzero((packed[1:] ^ packed[:-1]) <= position), 1
    while run.size:  # a run of s equal keys yields its s(s-1)/2 pairs, one offset at a time
        yield (packed[run] & position).astype(np.int64), (packed[run + step] & position).astype(np.int64)
        step += 1
        run = run[run + step < n]
        run = run[(packed[run] ^ packed[run + step]) <= position]


@contextmanager
def sharing(pool: ThreadPoolExecutor):
    """Searches in this block may also run tables on `pool` once it has a thread free: dedupe hands the
    pool that runs the caption search, so the core it frees joins the pHash search (in one 10M run the
    captions were done two minutes before the pHashes; a second search thread from the start, beside
    the caption thread on 2 cores, only slowed both)."""
    token = _helpers.set(pool)
    try:
        yield
    finally:
        _helpers.reset(token)


_helpers: ContextVar[ThreadPoolExecutor | None] = ContextVar("bit_sampling_helpers", default=None)


def near_pairs(hashes: np.ndarray, radius: int, recall: float = 0.999, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of distinct uint64 hashes at most `radius` bits apart, as two arrays."""
    n = len(hashes)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    bits, tables = bit_sampling_plan(n, radius, recall)
    id_bits = (n - 1).bit_length()
    positions = np.arange(n, dtype=np.uint64)
    rng = np.random.default_rng(seed)
    masks = iter([np.uint64(sum(1 << int(b) for b in rng.choice(64, bits, replace=False))) for _ in range(tables)])
    lock = threading.Lock()

    def search() -> list[np.ndarray]:  # tables taken one at a time until none is left
        keys, found = np.empty(n, np.uint64), []
        while (mask := _next_of(masks, lock)) is not None:
            for a, b in equal_keys(np.bitwise_and(hashes, mask, out=keys), id_bits, positions):
                close = np.bitwise_count(hashes[a] ^ hashes[b]) <= radius
                a, b = a[close], b[close]
                found.append(np.minimum(a, b) * n + np.maximum(a, b))
        return found

    pool = _helpers.get()
    helper = pool.submit(search) if pool is not None and tables > 1 else None
    found = search()
    if helper is not None and not helper.cancel():  # started: it holds tables of its own
        found += helper.result()
    pairs = distinct(np.concatenate(found)) if found else np.empty(0, np.int64)
    return pairs // n, pairs % n


def _next_of(items, lock: threading.Lock):
    with lock:
        return next(items, None)


def hamming_pairs(ids, hashes, radius: int) -> list[tuple[str, str, int]]:
    """(a, b, distance) with a < b for items whose hashes are at most `radius` bits apart. Items with
    the same hash pair with the first of them (by id) at distance 0. `ids`: a list or an Arrow string
    array; `hashes`: ints or a uint64 array (10M of them as Python objects would cost ~1.5 GB)."""
    if not len(ids):
        return []
    arrow = hasattr(ids, "to_pylist")
    order = pc.sort_indices(ids).to_numpy() if arrow else np.array(sorted(range(len(ids)), key=ids.__getitem__))
    values = np.asarray(hashes, dtype=np.uint64)[order]

    def name(k: int) -> str:
        return ids[int(order[k])].as_py() if arrow else ids[order[k]]

    distinct, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    same = np.flatnonzero(first[inverse] != np.arange(len(values)))
    pairs = [(name(first[inverse[i]]), name(i), 0) for i in same.tolist()]
    i, j = near_pairs(distinct, radius)
    distances = np.bitwise_count(distinct[i] ^ distinct[j])
    for x, y, d in zip(first[i].tolist(), first[j].tolist(), distances.tolist()):
        pairs.append((*sorted((name(x), name(y))), d))
    return pairs


def sequence_pairs(ids: list[str], sequences: list[list[int]], radius: int) -> list[tuple[str, str, float]]:
    """(a, b, median distance) for items whose hash sequences (a video's keyframes, one a second) match:
    aligned frame by frame (either may start one frame later), the median distance is within `radius`
    and the shorter is at least 80% of the longer. Candidates are items sharing a near frame. Sequences
    shorter than MIN_KEYFRAMES are left out (one shared opening frame says little)."""
    frames = [(k, h) for k, seq in enumerate(sequences) if len(seq) >= MIN_KEYFRAMES for h in seq]
    if not frames:
        return []
    distinct, inverse = np.unique(np.array([h for _, h in frames], dtype=np.uint64), return_inverse=True)
    owners: dict[int, set[int]] = {}
    for (item, _), h in zip(frames, inverse.tolist()):
        owners.setdefault(h, set()).add(item)
    i, j = near_pairs(distinct, radius)
    candidates = set()
    for x, y in [*zip(i.tolist(), j.tolist()), *((h, h) for h in owners)]:
        if len(owners[x]) * len(owners[y]) > COMMON_FRAME_ITEMS**2:
            continue  # a black or title frame many videos share says nothing about any two of them
        candidates.update((min(a, b), max(a, b)) for a in owners[x] for b in owners[y] if a != b)
    pairs = []
    for a, b in sorted(candidates):
        seq_a, seq_b = np.array(sequences[a], np.uint64), np.array(sequences[b], np.uint64)
        if min(len(seq_a), len(seq_b)) < 0.8 * max(len(seq_a), len(seq_b)):
            continue
        distance = sequence_distance(seq_a, seq_b)
        if distance <= radius:
            pairs.append((*sorted((ids[a], ids[b])), distance))
    return pairs


def sequence_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The median bit distance of two hash sequences aligned frame by frame, either starting a frame later."""
    return min(_median_distance(a, b), _median_distance(a[1:], b), _median_distance(a, b[1:]))


def _median_distance(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.median(np.bitwise_count(a[:n] ^ b[:n]))) if n else 64.0
