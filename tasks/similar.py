"""Near-duplicate pairs, found without comparing every item with every other.

- `hamming_pairs`: 64-bit perceptual hashes within a Hamming radius, by multi-index hashing
  (Norouzi et al.) in faiss (`IndexBinaryMultiHash`): the hash is cut into 3 tables of 21 bits; two
  hashes within r bits differ in at most r // 3 bits of some table (pigeonhole), so each hash only
  meets those whose table key lies within r // 3 bit flips of its own, and every candidate is
  verified on all 64 bits: exact, not approximate. Identical hashes are collapsed first, so a flood
  of blank images is one entry, not a quadratic clique.
- `caption_pairs`: texts whose word 3-shingle sets have a Jaccard similarity above a threshold, by
  MinHash LSH (datasketch), verified on the exact shingle sets.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

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


def _near(hashes: np.ndarray, radius: int) -> list[tuple[int, int]]:
    """Index pairs (i < j) of distinct hashes within `radius` bits."""
    import faiss  # imported on use: only the dedupe decision needs it

    tables = 3  # of 21 bits: two hashes within r bits differ in at most r // 3 bits of some table
    index = faiss.IndexBinaryMultiHash(64, tables, 21)
    index.nflip = radius // tables
    codes = hashes.astype("<u8").view(np.uint8).reshape(-1, 8)
    index.add(codes)
    limits, _, found = index.range_search(codes, radius + 1)  # faiss returns distances below the bound
    query = np.repeat(np.arange(len(hashes)), np.diff(limits).astype(np.int64))
    keep = found > query
    return list(zip(query[keep].tolist(), found[keep].tolist()))


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
