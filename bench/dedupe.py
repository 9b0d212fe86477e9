"""Near-duplicate search at scale, mmetl against the peers a user would pick, on the same inputs in one
run (`make bench`; each measurement in a fresh process, for its own peak RSS).

Images: N random 64-bit hashes (pHashes of distinct photographs are 20+ bits apart, as random ones
are), plus a planted copy of 2% of them, 1 to R bits away (R the radius; uniform). Wanted: every pair
within R bits. Recall is over the planted pairs; "beyond" counts returned pairs farther than R (a
false merge: must be 0).
- mmetl:        tasks/similar.near_pairs: bit-sampling LSH by sorting (1M and 10M).
- faiss multi:  IndexBinaryMultiHash range search (3 tables of 21 bits, R // 3 flips), faiss's
                multi-index hashing: exact, the nearest peer in method.
- brute force:  IndexBinaryFlat range search (every hash against every other, in C++) for 20,000
                sampled queries; its time scaled to all N queries, and its pairs the exact truth
                for those queries (random close pairs included) that mmetl's recall is checked on.

Captions: N synthetic captions (8-20 words drawn from a Zipf-distributed 30k-word vocabulary), plus a
near copy of 2% of them (a word appended, or the last word changed: Jaccard 0.7-0.93 on 3-shingles).
Wanted: pairs with Jaccard >= 0.8 (exact Jaccard decides what is wanted).
- mmetl:        tasks/similar.caption_pairs: numpy MinHash, band keys sorted, exact verification.
- datasketch:   MinHash.bulk + MinHashLSH (threshold 0.8, 128 permutations, the same bands and rows),
                insert all, query each; its candidates verified on exact shingle sets like ours.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BRUTE_QUERIES = 20_000


def planted_hashes(n: int, radius: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distinct hashes, and the planted pairs (i < j) as an (m, 2) array of positions in them."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    copies = base[: n // 50].copy()
    flips = rng.integers(1, radius + 1, len(copies))
    for k in range(1, radius + 1):  # vectorized by distance: k distinct random bits per copy
        rows = np.flatnonzero(flips == k)
        bits = np.argsort(rng.random((len(rows), 64)), axis=1)[:, :k].astype(np.uint64)
        copies[rows] ^= np.bitwise_or.reduce(np.uint64(1) << bits, axis=1)
    hashes, inverse = np.unique(np.concatenate([base, copies]), return_inverse=True)
    pairs = np.stack([inverse[: len(copies)], inverse[n:]], axis=1)
    return hashes, np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1)


def image_run(method: str, n: int, radius: int) -> dict:
    hashes, planted = planted_hashes(n, radius)
    start = time.perf_counter()
    if method == "mmetl":
        from tasks.similar import near_pairs

        a, b = near_pairs(hashes, radius)
        seconds = time.perf_counter() - start
        found = set(zip(a.tolist(), b.tolist()))
        beyond = int((np.bitwise_count(hashes[a] ^ hashes[b]) > radius).sum())
        # the exact pairs of a sample of queries (from the brute-force run's seed): are they all found?
        sample = np.random.default_rng(1).choice(len(hashes), min(BRUTE_QUERIES, len(hashes)), replace=False)
        truth = _flat_pairs(hashes, sample, radius)
        sample_recall = sum((min(p), max(p)) in found for p in truth) / max(len(truth), 1)
        extra = {"sample_recall": sample_recall, "sample_pairs": len(truth)}
    else:
        import faiss

        codes = hashes.astype("<u8").view(np.uint8).reshape(-1, 8)
        if method == "faiss-multi":
            index = faiss.IndexBinaryMultiHash(64, 3, 21)
            index.nflip = radius // 3
            index.add(codes)
            limits, _, hits = index.range_search(codes, radius + 1)  # faiss: distances below the bound
            seconds = time.perf_counter() - start
            query = np.repeat(np.arange(len(hashes)), np.diff(limits).astype(np.int64))
            keep = hits > query
            found = set(zip(query[keep].tolist(), hits[keep].tolist()))
            extra = {}
        else:  # brute force on a sample of queries, scaled to all
            sample = np.random.default_rng(1).choice(len(hashes), min(BRUTE_QUERIES, len(hashes)), replace=False)
            truth = _flat_pairs(hashes, sample, radius)
            seconds = (time.perf_counter() - start) * len(hashes) / len(sample)
            found = truth
            extra = {"measured_queries": len(sample)}
        beyond = 0
    recall = sum((int(a), int(b)) in found for a, b in planted) / len(planted) if method != "brute" else None
    return {
        "seconds": seconds,
        "pairs": len(found),
        "recall": recall,
        "beyond": beyond,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **extra,
    }


def _flat_pairs(hashes: np.ndarray, queries: np.ndarray, radius: int) -> set[tuple[int, int]]:
    import faiss

    codes = hashes.astype("<u8").view(np.uint8).reshape(-1, 8)
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    limits, _, hits = index.range_search(codes[queries], radius + 1)
    query = np.repeat(queries, np.diff(limits).astype(np.int64))
    return {(min(q, h), max(q, h)) for q, h in zip(query.tolist(), hits.tolist()) if q != h}


def make_captions(n: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(30_000)])
    ranks = np.minimum(rng.zipf(1.3, size=n * 20) - 1, len(vocabulary) - 1)
    lengths = rng.integers(8, 21, n)
    ends = np.cumsum(lengths)
    words = vocabulary[ranks[: ends[-1]]]
    texts = [" ".join(words[e - k : e]) for e, k in zip(ends.tolist(), lengths.tolist())]
    planted = []
    for i in range(n // 50):
        tokens = texts[i].split()
        if i % 2:
            tokens[-1] = "changed"
        else:
            tokens.append("appended")
        texts.append(" ".join(tokens))
        planted.append((i, len(texts) - 1))
    return texts, planted


def caption_run(method: str, n: int, threshold: float = 0.8, num_perm: int = 128) -> dict:
    import pyarrow as pa

    from tasks.similar.captions import (
        caption_pairs,
        jaccard,
        lsh_bands,
        normalize,
        normalized,
        shingle_hashes,
        shingles_of,
        words_of,
    )

    texts, planted = make_captions(n)
    keys = [f"{i:09d}" for i in range(len(texts))]
    start = time.perf_counter()
    if method == "mmetl":
        found = {(int(a), int(b)) for a, b, _ in caption_pairs(keys, texts, threshold, num_perm)}
    else:
        from datasketch import MinHash, MinHashLSH

        # the same normalized texts and exact check as mmetl's, each computed for all texts at once
        words, lengths = words_of(pa.array(texts))
        texts_normalized = normalized(words, lengths).to_pylist()
        values, starts = shingles_of(words, lengths)
        shingles = [
            [" ".join(w[i : i + 3]).encode() for i in range(max(1, len(w) - 2))]
            for w in (t.split() for t in texts_normalized)
        ]
        signatures = MinHash.bulk(shingles, num_perm=num_perm)
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=lsh_bands(threshold, num_perm))
        with lsh.insertion_session() as session:
            for key, signature in zip(keys, signatures):
                session.insert(key, signature)
        found = set()
        for key, signature in zip(keys, signatures):
            for other in lsh.query(signature):
                if other > key:
                    a, b = int(key), int(other)
                    if jaccard(values[starts[a] : starts[a + 1]], values[starts[b] : starts[b + 1]]) >= threshold:
                        found.add((a, b))
    seconds = time.perf_counter() - start
    wanted = [
        p
        for p in planted
        if jaccard(shingle_hashes(normalize(texts[p[0]])), shingle_hashes(normalize(texts[p[1]]))) >= threshold
    ]
    recall = sum(p in found for p in wanted) / max(len(wanted), 1)
    return {
        "seconds": seconds,
        "pairs": len(found),
        "wanted": len(wanted),
        "recall": recall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


RUNS = {  # (what, method, n, radius), with the budget each is held to on a 2-core machine
    "images": [
        ("mmetl", 1_000_000, 8),  # <= 20 s, recall >= 99.5%, no false merge
        ("mmetl", 1_000_000, 4),  # <= 5 s
        ("faiss-multi", 1_000_000, 4),  # ~105 s here
        ("brute", 1_000_000, 8),
        ("mmetl", 10_000_000, 8),
    ],  # <= 5 min in <= 4 GB
    "captions": [("mmetl", 1_000_000, None), ("datasketch", 1_000_000, None)],  # goal >= 3x at equal recall
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "dedupe"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every N (0.01 for a quick look)")
    parser.add_argument("--only", choices=sorted(RUNS), help="one of the two benchmarks")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        what, method, n, radius = args.one
        result = image_run(method, int(n), int(radius)) if what == "images" else caption_run(method, int(n))
        print(json.dumps(result))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Near-duplicate search (one process each, 2-core VM)", ""]
    for what, runs in RUNS.items():
        if args.only and what != args.only:
            continue
        lines += [
            f"## {what}",
            "",
            "| N | radius | method | seconds | vs mmetl same N, radius | recall | pairs | beyond radius"
            " | peak RSS MB | notes |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        ours = {}
        for method, n, radius in runs:
            n = max(1000, int(n * args.scale))
            result = subprocess.run(
                [sys.executable, __file__, "--one", what, method, str(n), str(radius or 0)],
                capture_output=True,
                text=True,
            )
            if result.returncode:
                print(result.stderr, file=sys.stderr)
                lines.append(
                    f"| {n:,} | {radius or ''} | {method} | failed: {result.stderr.strip().splitlines()[-1]} |"
                )
                continue
            r = json.loads(result.stdout)
            if method == "mmetl":
                ours[n, radius] = r["seconds"]
            ratio = f"{r['seconds'] / ours[n, radius]:.1f}x" if (n, radius) in ours else ""
            notes = []
            if "sample_recall" in r:
                notes.append(
                    f"recall {r['sample_recall']:.4f} of the {r['sample_pairs']} exact pairs of 20k sampled queries"
                )
            if "measured_queries" in r:
                notes.append(f"{r['measured_queries']} queries timed, scaled to N")
            if "wanted" in r:
                notes.append(f"{r['wanted']} planted pairs with Jaccard >= 0.8")
            recall = "" if r["recall"] is None else f"{r['recall']:.4f}"
            lines.append(
                f"| {n:,} | {radius or ''} | {method} | {r['seconds']:.1f} | {ratio} | {recall} | {r['pairs']} |"
                f" {r.get('beyond', '')} | {r['peak_rss_mb']:.0f} | {'; '.join(notes)} |"
            )
            print(lines[-1], flush=True)
        lines.append("")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
