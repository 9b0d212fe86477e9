"""Near-duplicate pairs, found without comparing every item with every other.

- `hamming_pairs`: 64-bit perceptual hashes within a Hamming radius, by multi-index hashing
  (Norouzi et al.): the hash is cut into 3 chunks; two hashes within r bits differ in at most r // 3
  bits of some chunk (pigeonhole), so each hash only meets those whose chunk lies within r // 3 bits of
  its own, found by sorted search; every candidate is then verified on all 64 bits. Identical hashes
  are collapsed first, so a flood of blank images is one entry, not a quadratic clique.
- `caption_pairs`: texts whose word 3-shingle sets have a Jaccard similarity above a threshold, by
  MinHash LSH (datasketch), verified on the exact shingle sets.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict

import numpy as np

CHUNKS = ((0, 22), (22, 21), (43, 21))  # (low bit, width) of the three chunks of a 64-bit hash
BLOCK = 4096  # query hashes handled at once: bounds the candidate arrays' memory


def hamming_pairs(ids: list[str], hashes: list[int], radius: int) -> list[tuple[str, str, int]]:
    """(a, b, distance) with a < b for every two items whose hashes are at most `radius` bits apart.
    Items with the same hash are paired with the first of them (by id) at distance 0."""
    if not ids:
        return []
    order = sorted(range(len(ids)), key=ids.__getitem__)
    values = np.array([hashes[i] for i in order], dtype=np.uint64)
    names = [ids[i] for i in order]
    distinct, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    pairs = [(names[first[k]], names[i], 0) for i, k in enumerate(inverse) if first[k] != i]
    for i, j in _near(distinct, radius):
        a, b = sorted((names[first[i]], names[first[j]]))
        pairs.append((a, b, int(np.bitwise_count(distinct[i] ^ distinct[j]))))
    return pairs


def _near(hashes: np.ndarray, radius: int):
    """Index pairs (i < j) of distinct hashes within `radius` bits."""
    found: set[tuple[int, int]] = set()
    sub_radius = radius // len(CHUNKS)
    for low, width in CHUNKS:
        chunk = (hashes >> np.uint64(low)) & np.uint64((1 << width) - 1)
        order = np.argsort(chunk, kind="stable")
        sorted_chunk = chunk[order]
        flips = _flip_masks(width, sub_radius)
        for start in range(0, len(hashes), BLOCK):
            queries = np.arange(start, min(start + BLOCK, len(hashes)))
            probes = chunk[queries, None] ^ flips[None, :]  # every chunk value within sub_radius bits
            lo = np.searchsorted(sorted_chunk, probes, side="left")
            hi = np.searchsorted(sorted_chunk, probes, side="right")
            counts = (hi - lo).ravel()
            if not counts.any():
                continue
            query = np.repeat(np.repeat(queries, flips.size), counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            other = order[np.repeat(lo.ravel(), counts) + offsets]
            keep = (other > query) & (np.bitwise_count(hashes[query] ^ hashes[other]) <= radius)
            found.update(zip(query[keep].tolist(), other[keep].tolist()))
    return sorted(found)


def _flip_masks(width: int, bits: int) -> np.ndarray:
    masks = [sum(1 << b for b in combo) for k in range(bits + 1) for combo in itertools.combinations(range(width), k)]
    return np.array(masks, dtype=np.uint64)


WORD = re.compile(r"\w+")


def shingles(text: str, n: int = 3) -> set[str]:
    words = WORD.findall(text.lower())
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def caption_pairs(keys: list[str], texts: list[str], threshold: float, num_perm: int = 128,
                  seed: int = 1) -> list[tuple[str, str, float]]:
    """(a, b, jaccard) with a < b for texts whose 3-word shingle sets are at least `threshold` alike.
    Identical texts (after lower-casing) pair with the first of them at 1.0."""
    from datasketch import MinHash, MinHashLSH  # imported on use: scipy comes with it

    by_text: dict[str, list[str]] = defaultdict(list)
    for key, text in sorted(zip(keys, texts)):
        by_text[" ".join(WORD.findall(text.lower()))].append(key)
    pairs = [(same[0], other, 1.0) for same in by_text.values() for other in same[1:]]
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sets: dict[str, set[str]] = {}
    for text, same in by_text.items():
        words = shingles(text)
        if not words:
            continue
        signature = MinHash(num_perm=num_perm, seed=seed)
        signature.update_batch([w.encode() for w in words])
        key = same[0]
        for other in lsh.query(signature):
            similarity = jaccard(words, sets[other])
            if similarity >= threshold:
                pairs.append((*sorted((key, other)), similarity))
        lsh.insert(key, signature)
        sets[key] = words
    return pairs
