"""Near-duplicate search on real media: each signal finds the copies a scraped corpus holds and never
pairs two different recordings, photographs or clips. The distances these tests assert are the ones
the recipe's defaults and tasks/media/fingerprint.py quote."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tasks.core.groups import UnionFind
from tasks.media.audio import decode_audio
from tasks.media.video import decode_video
from tasks.similar import caption_pairs, fingerprint_pairs, near_pairs, sequence_pairs
from tasks.similar.sounds import bit_error_rate

from .realmedia import SOUND_EDITS, photo_video, skimage_photos, speech


def clusters(ids, pairs) -> set[frozenset]:
    union = UnionFind()
    for a, b, *_ in pairs:
        union.union(a, b)
    found: dict[str, set] = {}
    for i in ids:
        found.setdefault(union.find(i), set()).add(i)
    return {frozenset(c) for c in found.values()}


@pytest.fixture(scope="module")
def sounds():
    """16 spoken prompts, each as WAV and as four copies: MP3, 16 kHz FLAC, 50 ms trimmed, MP3 trimmed."""
    prints = {}
    for name, samples in speech(16).items():
        for edit, make in SOUND_EDITS.items():
            prints[f"{name}.{edit}"] = decode_audio(make(samples)).fingerprint
    return prints


@pytest.mark.slow
def test_re_encoded_and_trimmed_speech_is_one_recording_and_distinct_prompts_are_not(sounds):
    ids = sorted(sounds)
    pairs = fingerprint_pairs(ids, [sounds[i] for i in ids], max_ber=0.15)
    families = {frozenset(i for i in ids if i.split(".")[0] == name) for name in {i.split(".")[0] for i in ids}}
    assert clusters(ids, pairs) == families
    # the margins behind the default (0.15): copies well under it, distinct recordings well over
    originals = [np.array(sounds[i], np.uint32) for i in ids if i.endswith(".wav")]
    copies = [
        bit_error_rate(np.array(sounds[i], np.uint32), np.array(sounds[i.split(".")[0] + ".wav"], np.uint32))
        for i in ids
        if not i.endswith(".wav")
    ]
    distinct = [bit_error_rate(a, b) for a, b in itertools.combinations(originals, 2)]
    assert max(copies) <= 0.10 and min(distinct) >= 0.20, (max(copies), min(distinct))


def test_a_video_re_encoded_at_another_resolution_is_found_by_its_frames_and_by_its_sound():
    photos = skimage_photos(("astronaut", "coffee", "chelsea", "rocket"))
    tracks = list(speech(4, min_seconds=5.0).values())
    decoded = {}
    for (name, photo), track in zip(photos.items(), tracks):
        decoded[f"{name}.original"] = decode_video(photo_video(photo, (320, 240), track=track))
        decoded[f"{name}.small"] = decode_video(photo_video(photo, (160, 120), track=track, crf=35))
    ids = sorted(decoded)
    families = {frozenset({f"{n}.original", f"{n}.small"}) for n in photos}
    assert all(len(decoded[i].keyframe_phashes) == 5 for i in ids)
    by_frames = sequence_pairs(ids, [[int(h, 16) for h in decoded[i].keyframe_phashes] for i in ids], radius=8)
    assert clusters(ids, by_frames) == families
    by_sound = fingerprint_pairs(ids, [decoded[i].fingerprint for i in ids], max_ber=0.15)
    assert clusters(ids, by_sound) == families


def test_a_sound_shorter_than_chromaprint_needs_has_no_fingerprint_and_pairs_with_nothing():
    short = next(iter(speech(1, min_seconds=0.5).values()))[:8000]  # one second
    fingerprint = decode_audio(SOUND_EDITS["wav"](short)).fingerprint
    assert fingerprint == []
    assert fingerprint_pairs(["a", "b"], [fingerprint, fingerprint], max_ber=0.15) == []


def test_near_pairs_find_every_pair_within_the_radius_that_an_exact_search_finds():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**64 - 1, 30_000, dtype=np.uint64, endpoint=True)
    copies = base[:3000].copy()
    for k, flips in enumerate(rng.integers(1, 9, len(copies))):  # 1-8 bits away
        for bit in rng.choice(64, flips, replace=False):
            copies[k] ^= np.uint64(1) << np.uint64(bit)
    hashes = np.unique(np.concatenate([base, copies]))
    a, b = near_pairs(hashes, radius=8)
    index = faiss.IndexBinaryFlat(64)
    codes = hashes.astype("<u8").view(np.uint8).reshape(-1, 8)
    index.add(codes)
    limits, _, found = index.range_search(codes, 9)  # faiss: distances below the bound
    query = np.repeat(np.arange(len(hashes)), np.diff(limits).astype(np.int64))
    exact = {(int(q), int(f)) for q, f in zip(query, found) if f > q}
    assert len(exact) >= 3000
    assert set(zip(a.tolist(), b.tolist())) == exact


def test_a_search_shared_with_a_busy_pool_finds_the_same_pairs_whether_or_not_the_pool_joins(monkeypatch):
    """Dedupe lends the pHash search the caption search's thread once it is free: the tables it takes
    must add up to the same pairs, and a pool that never frees must not hold the search up."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from tasks.similar import bits

    rng = np.random.default_rng(4)
    base = rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64, endpoint=True)
    copies = base[:2000] ^ (np.uint64(1) << rng.integers(0, 64, 2000).astype(np.uint64))
    hashes = np.unique(np.concatenate([base, copies]))
    alone = near_pairs(hashes, radius=8)
    searched_on = []
    equal_keys = bits.equal_keys
    monkeypatch.setattr(bits, "equal_keys", lambda *a: searched_on.append(threading.current_thread()) or equal_keys(*a))
    free_soon, never = threading.Event(), threading.Event()
    with ThreadPoolExecutor(1) as pool, bits.sharing(pool):
        pool.submit(free_soon.wait, 0.2)  # busy at first, then free to take tables
        shared = bits.near_pairs(hashes, radius=8)
        helped = {t for t in searched_on if t is not threading.main_thread()}
        pool.submit(never.wait)  # never free while the search runs
        searched_on.clear()
        held = bits.near_pairs(hashes, radius=8)
        never.set()
    assert helped and set(searched_on) == {threading.main_thread()}
    for found in (shared, held):
        assert found[0].tolist() == alone[0].tolist() and found[1].tolist() == alone[1].tolist()
    assert len(alone[0]) >= 2000


def test_captions_with_small_edits_pair_and_unrelated_ones_do_not():
    texts = {
        "a": "A brown dog runs along the beach at sunset with a red ball",
        "b": "a brown dog runs along the beach at sunset with a red ball!",  # punctuation and case
        "c": "A brown dog runs along the beach at sunset with a red ball and a stick",  # words added
        "d": "Two people ride bicycles through a busy city street at night",
        "e": "A brown cat sleeps on the sofa next to a window in the sun",
        "f": "A brown dog runs along the beach at dawn with a blue ball",
    }  # two words changed: 0.38
    pairs = {(a, b) for a, b, _ in caption_pairs(list(texts), list(texts.values()), threshold=0.7)}
    assert pairs == {("a", "b"), ("a", "c")}  # b is a once normalized: c pairs with the first of them


def test_caption_search_agrees_with_exact_jaccard_on_many_captions():
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.choice(words, 12)) for _ in range(4000)]
    edited = []
    for k, text in enumerate(texts[:400]):
        if k % 2 == 0:  # a word appended: 10 of 11 shingles shared, Jaccard 0.91
            edited.append(text + " more")
        else:  # a middle word replaced: 3 of 10 shingles change, Jaccard 7/13 = 0.54
            tokens = text.split()
            tokens[6] = "changed"
            edited.append(" ".join(tokens))
    keys = [f"{i:05d}" for i in range(len(texts) + len(edited))]
    found = {(a, b) for a, b, _ in caption_pairs(keys, texts + edited, threshold=0.8)}
    appended = {(keys[i], keys[len(texts) + i]) for i in range(0, 400, 2)}
    assert found == appended


def test_captions_signed_a_block_at_a_time_pair_as_in_one_block(monkeypatch):
    """10M captions are normalized and signed a block at a time, and their candidate pairs checked a block
    at a time: the blocks must not change a shingle's hash, so the pairs found do not depend on where the
    blocks fall (nor on N)."""
    import pyarrow as pa

    import tasks.similar.captions as captions

    rng = np.random.default_rng(8)
    words = [f"w{i}" for i in range(400)]
    texts = [" ".join(rng.choice(words, int(rng.integers(10, 15)))) for _ in range(3000)]
    texts += [t + " again" for t in texts[:300]] + [t.upper() for t in texts[300:400]] + ["", "?!"]
    whole = captions.caption_index_pairs(texts, 0.8)
    monkeypatch.setattr(captions, "_TEXTS_PER_BLOCK", 257)
    monkeypatch.setattr(captions, "_PAIRS_PER_CHECK", 50)  # and the candidate pairs checked 50 at a time
    blocks = captions.caption_index_pairs(pa.chunked_array([texts[:1000], texts[1000:]]), 0.8)
    assert sorted(whole) == sorted(blocks)
    appended = {(i, 3000 + i) for i in range(300)} & {(a, b) for a, b, _ in whole}  # Jaccard ≥ 0.89
    assert len(appended) >= 294  # LSH recall at these similarities: ≥ 99%
    assert {(300 + i, 3300 + i, 1.0) for i in range(100)} <= set(whole)  # the same once normalized
    assert (3400, 3401, 1.0) in whole  # two captions with no words


def test_jaccards_of_many_pairs_at_once_are_each_pairs_exact_jaccard(monkeypatch):
    """Candidates are checked all at once (sets tagged by pair and sorted together), in blocks of a
    bounded number of values: against np.intersect1d pair by pair, blocks far smaller than the input."""
    import tasks.similar.captions as captions

    rng = np.random.default_rng(11)
    sets = [np.unique(rng.integers(0, 60, rng.integers(1, 40))).astype(np.uint64) for _ in range(500)]
    sets[7] = sets[8] = np.array([2**44 - 1], np.uint64)  # the largest value a shingle hash keeps
    starts = np.r_[0, np.cumsum([len(s) for s in sets])]
    values = np.concatenate(sets)
    xs, ys = rng.integers(0, 500, 5000), rng.integers(0, 500, 5000)
    xs[:3], ys[:3] = [7, 7, 3], [8, 7, 9]
    expected = [captions.jaccard(sets[x], sets[y]) for x, y in zip(xs, ys)]
    assert captions.jaccards(values, starts, xs, ys).tolist() == expected
    monkeypatch.setattr(captions, "_JACCARD_BLOCK", 97)  # a pair or a few per block
    assert captions.jaccards(values, starts, xs, ys).tolist() == expected
    assert expected[:2] == [1.0, 1.0] and len(set(expected)) > 100  # alike, disjoint and all between


def test_minhash_signatures_are_each_sets_least_hash_per_permutation_across_blocks(monkeypatch):
    """The vectorized signatures (sets of many widths, long ones padded, a few sets per block, empty
    sets among them) against the definition: per set and permutation, the least (a*x + b) >> 32 over
    the set's values."""
    import tasks.similar.captions as captions

    rng = np.random.default_rng(3)
    sizes = np.r_[rng.integers(0, 9, 300), rng.integers(17, 90, 20)]  # ~1 in 9 empty; long ones padded
    values = rng.integers(0, 2**44, int(sizes.sum()), dtype=np.uint64)
    starts = np.r_[0, np.cumsum(sizes)]
    monkeypatch.setattr(captions, "_CHUNK", 64)  # a few sets per block: many blocks per width
    got = captions.signatures(values, starts, num_perm=64, seed=7)

    perm = np.random.default_rng(7)
    a = perm.integers(0, 2**63, 64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = perm.integers(0, 2**63, 64, dtype=np.uint64)
    for i, (start, end) in enumerate(zip(starts[:-1], starts[1:])):
        expected = [
            min((int(a[p]) * int(x) + int(b[p])) % 2**64 >> 32 for x in values[start:end]) if end > start else 2**32 - 1
            for p in range(64)
        ]
        assert got[:, i].tolist() == expected, i
