"""Near-duplicate image search: mmetl's multi-index hashing against faiss on the same hashes, in one
run (`make bench`).

The hashes: N random 64-bit values (pHashes of distinct photographs are 20+ bits apart, as random
ones are), of which 2% get a planted copy 0-8 bits away. All pairs within 8 bits are wanted.

- mmetl:        tasks/similar.hamming_pairs: faiss's multi-hash index inside, with identical hashes
                collapsed first and ids mapped (exact by construction).
- faiss flat:   IndexBinaryFlat range search: every hash against every other, in C++ (exact).
- faiss multi:  IndexBinaryMultiHash (3 tables of 21 bits, 2 bit flips each), faiss's own multi-index
                hashing, the nearest peer in method.

Each runs in a fresh process; reported: seconds, pairs found, recall against faiss flat, and the
process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RADIUS = 8


def make_hashes(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    hashes = [rng.getrandbits(64) for _ in range(n)]
    for h in hashes[: n // 50]:
        for bit in rng.sample(range(64), rng.randint(0, RADIUS)):
            h ^= 1 << bit
        hashes.append(h)
    return hashes


def run_one(method: str, n: int) -> dict:
    """In this (child) process: one method over the hashes; pairs as a set of (i, j), i < j."""
    hashes = make_hashes(n)
    start = time.perf_counter()
    if method == "mmetl":
        sys.path.insert(0, str(REPO))
        from tasks.similar import hamming_pairs

        ids = [f"{i:09d}" for i in range(len(hashes))]
        pairs = {(int(a), int(b)) for a, b, _ in hamming_pairs(ids, hashes, RADIUS)}
    else:
        import faiss

        codes = np.array(hashes, dtype=np.uint64).view(np.uint8).reshape(-1, 8)
        if method == "faiss-flat":
            index = faiss.IndexBinaryFlat(64)
        else:
            index = faiss.IndexBinaryMultiHash(64, 3, 21)
            index.nflip = RADIUS // 3
        index.add(codes)
        limits, _, found = index.range_search(codes, RADIUS + 1)  # distances below the radius given
        pairs = set()
        for i in range(len(hashes)):
            pairs.update((i, int(j)) for j in found[limits[i]:limits[i + 1]] if j > i)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "pairs": sorted(pairs), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def components(pairs: list[list[int]]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "dedupe"))
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]))))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Near-duplicate search, 64-bit hashes within {RADIUS} bits (1 process)", "",
             "| N | method | seconds | ratio to mmetl | recall of faiss flat's pairs | peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for n in args.sizes:
        runs = {}
        for method in ("mmetl", "faiss-flat", "faiss-multi"):
            result = subprocess.run([sys.executable, __file__, "--one", method, str(n)], capture_output=True,
                                    text=True, check=True)
            runs[method] = json.loads(result.stdout)
            print(n, method, f"{runs[method]['seconds']:.2f} s", flush=True)
        # mmetl pairs a flood of equal hashes as a star, not a clique: a true pair is found when its two
        # items end in one cluster
        truth = runs["faiss-flat"]["pairs"]
        for method, r in runs.items():
            found = components(r["pairs"])
            recall = sum(1 for a, b in truth if a in found and found[a] == found.get(b)) / max(len(truth), 1)
            lines.append(f"| {len(make_hashes(n))} | {method} | {r['seconds']:.2f} |"
                         f" {r['seconds'] / runs['mmetl']['seconds']:.2f} | {recall:.4f} | {r['peak_rss_mb']:.0f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
