"""Near-duplicate captions: texts whose word 3-shingle sets have a Jaccard similarity at or above a
threshold, by MinHash LSH, vectorized.

Each text becomes the set of its lower-cased word 3-shingles, each hashed from its words' CRC-32s. A MinHash
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

import hashlib
import zlib
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .bits import distinct, equal_keys

# what separates words: anything but a letter, a digit or "_" (RE2's spelling of Python's \W)
NOT_WORD = r"[^\p{L}\p{N}_]+"
_CHUNK = 1 << 18  # shingle hashes per block of signature work (2 MB: it is hashed once per permutation)
_TEXTS_PER_BLOCK = 1 << 18  # texts normalized and signed at a time (caption_index_pairs)
_TEXT_ID_BITS = 20  # shingle hashes keep 44 bits, whatever the block (so blocks compare); ≥ a block's texts
_PAIRS_PER_CHECK = 1 << 20  # candidate pairs checked at a time (templated captions make millions)
_JACCARD_BLOCK = 1 << 20  # shingle hashes compared at a time by `jaccards` (8 MB: sorted in cache, 2x faster)
SHINGLE = 3  # words
_SHINGLE_WEIGHTS = [np.uint64(w) for w in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)]


def normalize(text: str) -> str:
    """Lower-cased words joined by single spaces: what two captions must share to be the same text."""
    return normalized(*words_of(pa.array([text], pa.string())))[0].as_py()


def normalized(words: pa.Array, lengths: np.ndarray) -> pa.Array:
    """Each text's words (as `words_of` gives them) joined by single spaces."""
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), words), " ")


def words_of(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Every text's lower-cased words (runs of letters, digits and "_"), flattened, and each text's
    number of words. In Arrow (RE2), not a Python loop: Python's `re` was a third of the caption search
    (a profile of bench/driver.py at 2M)."""
    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    lists = pc.split_pattern_regex(pc.utf8_lower(texts), pattern=NOT_WORD)
    flat, parents = pc.list_flatten(lists), pc.list_parent_indices(lists)
    nonempty = pc.not_equal(pc.utf8_length(flat), 0)  # "" where a text starts or ends with a separator
    lengths = np.bincount(parents.filter(nonempty).to_numpy(), minlength=len(texts)).astype(np.int64)
    return flat.filter(nonempty), lengths


def word_hashes(words: pa.Array) -> np.ndarray:
    """Each word's CRC-32 with bit 32 set (so no word hashes to the 0 that pads a text's end), computed
    once per distinct word: vocabularies repeat."""
    encoded = pc.dictionary_encode(words)
    vocabulary = encoded.dictionary.to_pylist()
    hashes = np.fromiter((zlib.crc32(w.encode()) | 1 << 32 for w in vocabulary), np.uint64, len(vocabulary))
    return hashes[encoded.indices.to_numpy(zero_copy_only=False)]


def shingle_sets(texts: list[str], id_bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The distinct word 3-shingles of each non-empty text, hashed, as one flat array sorted within
    each text, and each text's start in it (plus the end). A text under 3 words is one shingle.

    A hash keeps 64 - `id_bits` bits (the rest number the text while sorting): pass the same `id_bits`
    to every call whose hashes are compared."""
    return shingles_of(*words_of(pa.array(texts, pa.string())), id_bits)


def shingles_of(words: pa.Array, lengths: np.ndarray, id_bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`shingle_sets` of texts already split by `words_of`; combined in numpy from the words' hashes."""
    flat, n = word_hashes(words), len(lengths)
    owner = np.repeat(np.arange(n), lengths)
    place = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # index within its text
    left = np.repeat(lengths, lengths) - place  # words from here to the text's end
    first = (left >= SHINGLE) | (place == 0)  # where a shingle starts
    value = np.zeros(len(flat), np.uint64)
    padded = np.concatenate([flat, np.zeros(SHINGLE, np.uint64)])
    for k, weight in enumerate(_SHINGLE_WEIGHTS):  # a word past the text's end counts as 0
        value += np.where(left > k, padded[k : k + len(flat)], np.uint64(0)) * weight
    id_bits = id_bits or max(1, int(n).bit_length())
    assert n < 1 << id_bits
    keys = np.sort((owner[first].astype(np.uint64) << np.uint64(64 - id_bits)) | (value[first] >> np.uint64(id_bits)))
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # distinct per text (np.unique hashes: slower here)
    starts = np.searchsorted(keys >> np.uint64(64 - id_bits), np.arange(n + 1, dtype=np.uint64))
    return keys & np.uint64((1 << (64 - id_bits)) - 1), starts


def shingle_hashes(text: str) -> np.ndarray:
    """One text's shingle set (as `shingle_sets` hashes it, so the two compare)."""
    values, _ = shingle_sets([text])
    return values


def signatures(values: np.ndarray, starts: np.ndarray, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """MinHash signatures of the sets values[starts[i]:starts[i+1]], one row per permutation:
    (num_perm, n) uint32 (an empty set's column is all 0xFFFFFFFF).

    Sets of one width are laid out as a (width, sets) matrix, so a permutation's minima are a few
    whole-array operations rather than a reduction per set (np.minimum.reduceat: 1.6-2.2x slower on
    262k captions). A set is padded to its width class by repeating its last value: the minimum is unchanged."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
    sizes = np.diff(starts)
    out = np.full((num_perm, len(sizes)), np.iinfo(np.uint32).max, dtype=np.uint32)
    widths = _width_class(sizes)
    for width in np.unique(widths[sizes > 0]).tolist():
        sets = np.flatnonzero(widths == width)  # width 0 (empty sets) is not among them
        per = max(1, _CHUNK // width)  # sets at a time: a (width, per) block stays in cache
        for first in range(0, len(sets), per):
            chunk = sets[first : first + per]
            column = np.minimum(np.arange(width)[:, None], sizes[chunk] - 1)  # past its end: its last value
            block = values[starts[chunk] + column]
            hashed, least = np.empty_like(block), np.empty(len(chunk), np.uint64)
            for p in range(num_perm):
                np.multiply(block, a[p], out=hashed)
                np.add(hashed, b[p], out=hashed)
                # (a*x + b) >> 32 is monotone in (a*x + b): take the minimum first, shift only the minima
                np.minimum.reduce(hashed, axis=0, out=least)
                out[p, chunk] = least >> np.uint64(32)
    return out


def _width_class(sizes: np.ndarray) -> np.ndarray:
    """Each set's padded width: exact up to 16, then rounded up to an eighth of its power of two (at
    most 1/8 padding, and a few dozen widths for captions of any length)."""
    step = np.left_shift(1, np.maximum(np.frexp(np.maximum(sizes, 1))[1] - 4, 0))
    return np.where(sizes <= 16, sizes, -(-sizes // step) * step)


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
            fp = area(lambda s, r=rows, b=bands: 1 - (1 - s**r) ** b, 0.0, threshold)
            fn = area(lambda s, r=rows, b=bands: (1 - s**r) ** b, threshold, 1.0)
            cost = weights[0] * fp + weights[1] * fn
            if best is None or cost < best[0]:
                best = (cost, bands, rows)
    return best[1], best[2]


def _utf8(strings: pa.Array):
    """Each string's UTF-8 bytes, straight from the Arrow buffers (no Python str in between)."""
    offsets = np.frombuffer(strings.buffers()[1], np.int32, len(strings) + 1, strings.offset * 4)
    data = memoryview(strings.buffers()[2] or b"")
    return (bytes(data[a:b]) for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    both = len(np.intersect1d(a, b, assume_unique=True))
    return both / (len(a) + len(b) - both)


def jaccards(values: np.ndarray, starts: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """`jaccard` of sets xs[i] and ys[i] (values[starts[x]:starts[x+1]], shingle hashes under
    2^(64 - _TEXT_ID_BITS)), every pair at once.

    Both sets of each pair are tagged with the pair's number in the hashes' free top bits and sorted
    together: a value met twice in a row is in both sets. Templated captions ("photo 1 of 40") make
    millions of candidates: 40k of them made 5.7M, checked one `intersect1d` at a time in 17.8 s, 2.5 s
    here; blocks that sort in cache (`_JACCARD_BLOCK`) roughly halve that again (bench/README.md)."""
    lengths = np.diff(starts)
    sizes = lengths[xs] + lengths[ys]
    total = np.cumsum(sizes)
    out = np.empty(len(xs))
    shift, begin = np.uint64(64 - _TEXT_ID_BITS), 0
    while begin < len(xs):  # at most 2^20 pairs (the tag's bits) and _JACCARD_BLOCK values at a time
        fits = int(np.searchsorted(total, (total[begin - 1] if begin else 0) + _JACCARD_BLOCK, "right"))
        end = min(len(xs), begin + (1 << _TEXT_ID_BITS), max(begin + 1, fits))
        tagged = [
            np.repeat(np.arange(end - begin, dtype=np.uint64) << shift, lengths[side]) | values[_ranges(starts, side)]
            for side in (xs[begin:end], ys[begin:end])
        ]
        keys = np.sort(np.concatenate(tagged))
        both = np.bincount((keys[1:][keys[1:] == keys[:-1]] >> shift).astype(np.int64), minlength=end - begin)
        out[begin:end] = both / (sizes[begin:end] - both)
        begin = end
    return out


def _ranges(starts: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """The positions of these sets' values, one set after the other."""
    lengths = starts[sets + 1] - starts[sets]
    ends = np.cumsum(lengths)
    return np.repeat(starts[sets] - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)


def caption_pairs(
    keys: list[str], texts: list[str], threshold: float, num_perm: int = 128, seed: int = 1
) -> list[tuple[str, str, float]]:
    """(a, b, jaccard) with a < b for keys whose texts' shingle sets are at least `threshold` alike.
    Keys with the same normalized text pair with the first of them at 1.0."""
    order = sorted(range(len(keys)), key=keys.__getitem__)
    found = caption_index_pairs([texts[i] for i in order], threshold, num_perm, seed)
    return [(*sorted((keys[order[x]], keys[order[y]])), similarity) for x, y, similarity in found]


def caption_index_pairs(texts, threshold: float, num_perm: int = 128, seed: int = 1) -> list[tuple[int, int, float]]:
    """(i, j, jaccard) with i < j for texts (a list or an Arrow string array) whose shingle sets are at
    least `threshold` alike; texts with the same normalized text pair with the first of them at 1.0.

    Texts are normalized, shingled and signed `_TEXTS_PER_BLOCK` at a time, and what stays per text is
    its shingle hashes (for the exact check), an 8-byte digest of its normalized text and its band keys:
    10M captions fit a driver (a full signature matrix alone would be 5 GB)."""
    n = len(texts)
    bands, rows = lsh_bands(threshold, num_perm)
    rng = np.random.default_rng(seed + 1)
    weights = rng.integers(0, 2**63, rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    digests, empty = np.zeros(n, np.uint64), np.zeros(n, bool)
    values, starts, band_keys = [], [np.zeros(1, np.int64)], np.zeros((bands, n), np.uint64)
    texts = texts if isinstance(texts, pa.ChunkedArray | pa.Array) else pa.array(texts, pa.string())
    for begin in range(0, n, _TEXTS_PER_BLOCK):
        block = texts[begin : begin + _TEXTS_PER_BLOCK]
        words, lengths = words_of(block)
        end = begin + len(block)
        digests[begin:end] = np.fromiter(
            (
                int.from_bytes(hashlib.blake2b(t, digest_size=8).digest(), "little")
                for t in _utf8(normalized(words, lengths))
            ),
            np.uint64,
            len(block),
        )
        empty[begin:end] = lengths == 0
        block_values, block_starts = shingles_of(words, lengths, _TEXT_ID_BITS)
        signature = signatures(block_values, block_starts, num_perm, seed)
        for band in range(bands):
            key = band_keys[band, begin:end]
            for row, weight in zip(signature[band * rows : (band + 1) * rows], weights):
                key += row * weight
        starts.append(block_starts[1:].astype(np.int64) + starts[-1][-1])
        values.append(block_values)
    values, starts = np.concatenate(values) if values else np.zeros(0, np.uint64), np.concatenate(starts)
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)  # first: the earliest
    copies = np.flatnonzero(first[inverse] != np.arange(n))
    pairs = [(int(first[inverse[i]]), int(i), 1.0) for i in copies]
    firsts = np.sort(first[~empty[first]])
    if len(firsts) < 2:
        return pairs
    m, id_bits = len(firsts), (len(firsts) - 1).bit_length()
    candidates = [
        np.minimum(x, y) * m + np.maximum(x, y)
        for band in range(bands)
        for x, y in equal_keys(band_keys[band, firsts], id_bits)
    ]
    if not candidates:
        return pairs
    found = distinct(np.concatenate(candidates))
    del candidates
    for begin in range(0, len(found), _PAIRS_PER_CHECK):  # a block's arrays, not one per candidate at once
        block = found[begin : begin + _PAIRS_PER_CHECK]
        xs, ys = firsts[block // m], firsts[block % m]  # x < y: firsts are sorted
        similarity = jaccards(values, starts, xs, ys)
        alike = similarity >= threshold
        pairs.extend(zip(xs[alike].tolist(), ys[alike].tolist(), similarity[alike].tolist()))
    return pairs
