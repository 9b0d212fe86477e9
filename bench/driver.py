"""The driver at scale: the three decisions that hold one row per item in one process, on N planned items
(`make bench`; each decision in a fresh process, for its own time and peak RSS).

The input is what a LAION-sized URL list gives them: N URL rows (LAION-style Parquet: url, caption).
- plan:   `collect.plan_collect` reads the list through its adapter, gathers rows into items, names groups
          and writes the work shards (no media yet).
- dedupe: `dedupe.decide_duplicates` over those shards once clean has measured them: each item given a
          random pHash and sha256 (2% planted near copies, 4 bits away) and a 4 kB image's facts.
- split:  `split.assign_splits`: every group dealt to train/val/test per stratum.

Reported per N: seconds and peak RSS of each, and bytes of RSS per item (what a 10M-item plan would need).
The default N is 1M and 2M (the slope); `--sizes 10000000` runs the 10M the budget is stated for.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def url_list(path: Path, n: int) -> None:
    words = np.array("a dog cat on the beach with red blue car house tree in of at near".split())
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, pa.schema([("url", pa.string()), ("caption", pa.string())])) as out:
        for start in range(0, n, 1_000_000):
            ids = np.arange(start, min(start + 1_000_000, n))
            picks = words[rng.integers(0, len(words), (len(ids), 6))]
            captions = [" ".join(p) + f" {i}" for i, p in zip(ids, picks)]
            urls = [f"https://img{i % 997}.example.org/{i:09d}.jpg" for i in ids]
            out.write_table(pa.table({"url": urls, "caption": captions}))


def measured(shards: list[str], out_dir: Path) -> list[str]:
    """The planned shards as clean leaves them: signatures and facts filled in (2% near copies)."""
    rng = np.random.default_rng(1)
    found = []
    for uri in shards:
        table = pq.read_table(uri)
        n = table.num_rows
        hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
        copies = rng.random(n) < 0.02
        flips = np.uint64(0b1011_0000_0001)  # 4 bits
        hashes[copies] = np.roll(hashes, 1)[copies] ^ flips
        sha = [f"{h:016x}" * 4 for h in rng.integers(0, 2**63, n, dtype=np.int64)]
        for name, values in (("phash", [f"{h:016x}" for h in hashes]), ("sha256", sha)):
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
        for name, value, type_ in (("width", 256, pa.int32()), ("height", 192, pa.int32()),
                                   ("media_size", 4000, pa.int64()), ("media_ext", "jpg", pa.string())):  # fmt: skip
            table = table.set_column(table.schema.get_field_index(name), name, pa.array([value] * n, type_))
        path = out_dir / Path(uri).name
        pq.write_table(table, path)
        found.append(str(path))
    return found


def run(task: str, *args: str) -> dict:
    """One decision in a fresh process: its seconds and peak RSS."""
    out = subprocess.run([sys.executable, __file__, "--task", task, *args], capture_output=True, text=True)
    if out.returncode:
        return {"error": out.stderr[-1500:], "peak_rss_mb": None, "seconds": None}
    return json.loads(out.stdout.strip().splitlines()[-1])


def task(name: str, args: list[str]) -> None:
    from tasks.core.shards import ShardConfig
    from tasks.sources import make_source
    from tasks.stages import collect, dedupe, split
    from tasks.stages.dedupe import DedupeConfig
    from tasks.stages.split import SplitConfig

    start = time.perf_counter()
    if name == "plan":
        url_uri, out_dir = args
        source = make_source(name="laion", kind="urls", uri=url_uri)
        result = collect.plan_collect([source], "p", "r", ShardConfig(), 2, out_dir)
        extra = {"shards": result.shards, "items": result.n_items}
    elif name == "dedupe":
        out_uri, *shards = args
        result = dedupe.decide_duplicates(shards, out_uri, DedupeConfig())
        extra = {"duplicates": result.report["duplicates"]}
    else:
        out_uri, *shards = args
        split.assign_splits(shards, SplitConfig(), out_uri, {})
        extra = {}
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": round(seconds, 1), "peak_rss_mb": round(peak), **extra}))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 2_000_000])
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "driver"))
    parser.add_argument("--task", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.task:
        task(args.task, rest)
        return 0
    out = Path(args.out)
    rows = []
    for n in args.sizes:
        folder = out / f"n{n}"
        shutil.rmtree(folder, ignore_errors=True)  # each decision skips work whose output exists
        folder.mkdir(parents=True)
        urls = folder / "urls.parquet"
        url_list(urls, n)
        plan = run("plan", str(urls), str(folder / "plan"))
        if "error" in plan:
            rows.append({"n": n, "plan": plan})
            continue
        (folder / "clean").mkdir(exist_ok=True)
        shards = measured(plan.pop("shards"), folder / "clean")
        dedupe = run("dedupe", str(folder / "decision.parquet"), *shards)
        split = run("split", str(folder / "assignment.parquet"), *shards)
        rows.append({"n": n, "plan": plan, "dedupe": dedupe, "split": split})
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| N | decision | seconds | peak RSS | RSS per item |", "|---|---|---|---|---|"]
    for row in rows:
        for name in ("plan", "dedupe", "split"):
            r = row.get(name) or {}
            if r.get("peak_rss_mb") is None:
                lines.append(f"| {row['n']:,} | {name} | failed: {str(r.get('error', 'not run'))[-200:]!r} | | |")
                continue
            per_item = r["peak_rss_mb"] * 2**20 / row["n"]
            lines.append(f"| {row['n']:,} | {name} | {r['seconds']} | {r['peak_rss_mb']:,} MB | {per_item:,.0f} B |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
