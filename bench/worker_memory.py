"""A worker's memory while it streams long recordings: collect + clean over shards of 17 MB FLAC files
in 20 MB batches (`make bench`; writes bench/out/worker_memory/report.md).

Reported, as multiples of the batch's bytes (the engine's bound on what one batch holds):
- the first shard's growth of a fresh process's peak RSS over its set-up stages (what
  tests/test_engine.py bounds), for shards of 8 and 24 recordings;
- in one process, each of three shards' peak over its start, and the RSS after each: flat when freed
  media goes back to the operating system (tasks/core/memory.py).
The plain limit is one recording's bytes held once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BATCH_BYTES = 20 * 2**20

WORKER = """
import json, shutil, sys
from tasks.build import engine

def kb(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])

stages = [("collect", {}), ("clean", {})]
[engine.load_stage(*stage) for stage in stages]
runs = []
for n in range(int(sys.argv[3])):
    out = f"{sys.argv[2]}/run{n}"
    shutil.rmtree(out, ignore_errors=True)
    open("/proc/self/clear_refs", "w").write("5")  # the peak from here on
    before = kb("VmRSS")
    engine.run_step("collect-clean", stages, sys.argv[1], out, batch_bytes=int(sys.argv[4]), writes_media=True)
    runs.append({"growth_mb": (kb("VmHWM") - before) / 1024, "rss_after_mb": kb("VmRSS") / 1024})
print(json.dumps(runs))
"""


def shard_of(folder: Path, n: int) -> tuple[str, int]:
    from tasks.core import storage
    from tests.helpers import noise_flac, sample, table

    rows = []
    for i in range(n):
        path = folder / "media" / f"{i}.flac"
        if not path.exists():
            storage.write_bytes(str(path), noise_flac(90, seed=i))
        size = path.stat().st_size
        rows.append({**sample("audio", text=f"noise {i}", n=i), "source_uri": str(path), "media_size": size})
    uri = str(folder / f"in-{n}" / "shard-00000.parquet")
    storage.write_parquet(uri, table(*rows))
    return uri, max(r["media_size"] for r in rows)


def measure(uri: str, out: Path, shards: int) -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-c", WORKER, uri, str(out), str(shards), str(BATCH_BYTES)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(result.stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "worker_memory"))
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out / "work", ignore_errors=True)
    batch_mb = BATCH_BYTES / 2**20
    lines = [
        "# A worker streaming long recordings (collect + clean, 20 MB batches)",
        "",
        "| shard | what | MB | × batch bytes |",
        "|---|---|---|---|",
    ]
    for n in (8, 24):
        uri, largest = shard_of(out, n)
        (first,) = measure(uri, out / "work" / f"first-{n}", 1)
        lines.append(f"| {n} recordings | first shard: growth of peak RSS | {first['growth_mb']:.0f} | "
                     f"{first['growth_mb'] / batch_mb:.1f} |")  # fmt: skip
    lines.append(f"| | one recording held once (the limit) | {largest / 2**20:.0f} | {largest / BATCH_BYTES:.1f} |")
    runs = measure(uri, out / "work" / "again", 3)
    for k, run in enumerate(runs, 1):
        lines.append(f"| 24 recordings, shard {k} of 3 in one process | peak over its start | "
                     f"{run['growth_mb']:.0f} | {run['growth_mb'] / batch_mb:.1f} |")  # fmt: skip
    after = ", ".join(f"{r['rss_after_mb']:.0f}" for r in runs)
    lines.append(f"| | RSS after each shard | {after} | |")
    shutil.rmtree(out / "work", ignore_errors=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
