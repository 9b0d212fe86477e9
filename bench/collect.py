"""Downloading a URL list: mmetl's collect against the img2dataset CLI alone, same URLs, same
machine, same resize settings, in one run (`make bench`).

The corpus: 10,000 and 40,000 (`--sizes`) distinct 512 px JPEG crops of the real photographs
scikit-image ships, served by Python's own `http.server` on loopback, listed in a LAION-style parquet
(url, caption). Both sides resize to 256 px (keep_ratio, JPEG quality 95: img2dataset with its
resizer, mmetl with its one decode that also measures for clean) on as many processes as cores with
16 download threads each; mmetl gets `per_host: 16` so that its politeness limit (4 per host by
default) does not throttle a single loopback host. The slope and intercept between the two sizes
give each run's marginal cost per image and its fixed cost.

Measured, each as a separate process tree sampled for RSS every 0.2 s:
- img2dataset: its CLI, multiprocessing distributor, webdataset output.
- collect:     mmetl's collect stage alone on a local Ray cluster, one task per planned shard, media
               written to the work folder as a build does (the orchestration a build adds to it).
- build:       `mmetl build` as a user runs it: collect, then clean (texts; an image's facts as the
               download measured them), dedupe, filter, align, split and publish, with its own
               Prefect API and Ray.

Reported: seconds, images/s, the ratio to img2dataset (>= 1.0: no orchestration tax), peak RSS of
the largest process and of the whole tree. The server's own CPU use counts against both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import REPO, make_corpus  # noqa: E402

BIN = Path(sys.executable).parent
RESIZE = {"image_size": 256, "resize_mode": "keep_ratio", "encode_format": "jpg", "encode_quality": 95}
THREADS = 16


class TreeWatcher(threading.Thread):
    """Peak RSS of the largest process and of the sum over a process and all its descendants."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_process, self.peak_tree = pid, 0, 0
        self.done = threading.Event()
        self.start()

    def run(self):
        while not self.done.is_set():
            try:
                root = psutil.Process(self.pid)
                rss = [p.memory_info().rss for p in [root, *root.children(recursive=True)] if p.is_running()]
                self.peak_process, self.peak_tree = max(self.peak_process, *rss), max(self.peak_tree, sum(rss))
            except psutil.Error:
                pass
            time.sleep(0.2)

    def stop(self) -> dict:
        self.done.set()
        self.join()
        return {"peak_process_rss_mb": self.peak_process / 2**20, "peak_tree_rss_mb": self.peak_tree / 2**20}


def timed(command: list[str], env: dict | None = None) -> dict:
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    watcher = TreeWatcher(process.pid)
    output = process.communicate()[0]
    result = {"seconds": time.perf_counter() - start, **watcher.stop()}
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed:\n{output[-3000:]}")
    return {**result, "output": output}


def serve(folder: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            import urllib.request

            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the loopback server did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_url_list(manifest: Path, base_url: str, out: Path, n: int) -> None:
    """The first n images of the corpus, one caption per URL as in CC3M or LAION."""
    first = {}
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        if len(first) < n or row["media"] in first:
            first.setdefault(row["media"], row["text"])
    pq.write_table(pa.table({"url": [f"{base_url}/{media}" for media in first], "caption": list(first.values())}), out)


def run_img2dataset(url_list: Path, out: Path, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    result = timed(
        [
            str(BIN / "img2dataset"),
            "--url_list",
            str(url_list),
            "--input_format",
            "parquet",
            "--url_col",
            "url",
            "--caption_col",
            "caption",
            "--output_format",
            "webdataset",
            "--output_folder",
            str(out),
            "--processes_count",
            str(workers),
            "--thread_count",
            str(THREADS),
            "--image_size",
            str(RESIZE["image_size"]),
            "--resize_mode",
            RESIZE["resize_mode"],
            "--encode_format",
            RESIZE["encode_format"],
            "--encode_quality",
            str(RESIZE["encode_quality"]),
            "--number_sample_per_shard",
            "1000",
            "--distributor",
            "multiprocessing",
            "--enable_wandb",
            "False",
            "--timeout",
            "20",
            "--retries",
            "2",
        ],
        env={"NO_ALBUMENTATIONS_UPDATE": "1"},
    )
    stats = [json.loads(p.read_text()) for p in out.glob("*_stats.json")]
    return {**result, "images": sum(s["successes"] for s in stats)}


def run_collect(url_list: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    result = timed([sys.executable, __file__, "--collect-only", str(url_list), str(out)])
    return {**result, **json.loads(result["output"].strip().splitlines()[-1])}


def collect_only(url_list: Path, out: Path) -> None:
    """mmetl's collect stage on local Ray, one task per planned shard, without Prefect (the child process)."""
    sys.path.insert(0, str(REPO))
    import ray

    from tasks.build import engine
    from tasks.core.shards import ShardConfig
    from tasks.sources import make_source
    from tasks.stages.collect import NetworkConfig, plan_collect

    clock = time.perf_counter()
    source = make_source(name="bench", kind="urls", uri=str(url_list))
    # "local": a Ray of its own, not a cluster another run left recorded in /tmp/ray
    ray.init("local", num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)  # fmt: skip
    started = time.perf_counter()
    plan = plan_collect([source], "bench", "bench", ShardConfig(), os.cpu_count(), str(out / "plan"))
    planned = time.perf_counter()
    network = NetworkConfig(allow_hosts=["127.0.0.1"], threads=THREADS, per_host=THREADS, subtitles=[], resize=RESIZE)
    stages = [("collect", {"cache_dir": str(out / "fetched"), **network.model_dump(mode="json")})]
    step = ray.remote(num_cpus=1)(engine.run_step)
    results = ray.get(
        [step.remote("collect", stages, shard, str(out / "collect"), writes_media=True) for shard in plan.shards]
    )
    print(
        json.dumps(
            {
                "images": sum(r.stages[0].n_kept for r in results),
                "shards": len(results),
                "ray_start_s": started - clock,
                "plan_s": planned - started,
                "shards_s": time.perf_counter() - planned,
            }
        )
    )


def run_build(url_list: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    recipe = out / "recipe.yaml"
    network = {"allow_hosts": ["127.0.0.1"], "threads": THREADS, "per_host": THREADS, "subtitles": [], "resize": RESIZE}
    recipe.write_text(
        json.dumps(
            {"name": "bench", "sources": [{"name": "bench", "kind": "urls", "uri": str(url_list)}], "network": network}
        )
    )  # JSON is YAML
    env = {"MMETL_STORAGE": str(out / "store"), "MMETL_PREFECT_HOME": str(out.parent / "prefect")}
    result = timed([str(BIN / "mmetl"), "build", str(recipe), "--partition", "bench"], env=env)
    stats = json.loads((out / "store" / "bench" / "versions" / "bench" / "stats.json").read_text())
    return {
        **result,
        "images": stats["funnel"][1]["kept"],
        "published": sum(s["samples"] for s in stats["splits"].values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 40_000], help="URL list lengths")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "collect"))
    parser.add_argument("--collect-only", nargs=2, metavar=("URL_LIST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.collect_only:
        collect_only(Path(args.collect_only[0]), Path(args.collect_only[1]))
        return 0
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    workers = os.cpu_count() or 1
    sizes = sorted(args.sizes)
    print(f"making {sizes[-1]} 512 px JPEGs ...", flush=True)
    manifest, input_bytes = make_corpus(out / "corpus", sizes[-1], side=512)
    server, base_url = serve(out / "corpus")
    measures = {
        "img2dataset": lambda urls: run_img2dataset(urls, out / "img2dataset", workers),
        "collect": lambda urls: run_collect(urls, out / "collect"),
        "build": lambda urls: run_build(urls, out / "build"),
    }
    runs: dict[int, dict] = {}
    try:
        for n in sizes:  # the first n images of one corpus
            url_list = out / f"urls-{n}.parquet"
            write_url_list(manifest, base_url, url_list, n)
            runs[n] = {}
            for name, measure in measures.items():
                print(f"{n} URLs: {name} ...", flush=True)
                runs[n][name] = {k: v for k, v in measure(url_list).items() if k != "output"}
                print(json.dumps(runs[n][name]), flush=True)
    finally:
        server.terminate()
    lines = report(runs, workers, input_bytes / sizes[-1])
    (out / "report.json").write_text(json.dumps({"input_bytes": input_bytes, "runs": runs}, indent=2))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def report(runs: dict[int, dict], workers: int, bytes_per_image: float) -> list[str]:
    lines = [
        f"# Downloading URL lists from loopback: mmetl vs the img2dataset CLI ({workers} processes x {THREADS}"
        f" threads, resize to {RESIZE['image_size']} px)",
        "",
        f"Input: 512 px JPEGs, {bytes_per_image / 1024:.0f} kB each on average.",
        "",
        "| URLs | run | images | seconds | images/s | ratio to img2dataset | peak RSS, largest process MB |"
        " peak RSS, whole tree MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, by_run in runs.items():
        peer = by_run["img2dataset"]["images"] / by_run["img2dataset"]["seconds"]
        for name, r in by_run.items():
            rate = r["images"] / r["seconds"]
            lines.append(
                f"| {n} | {name} | {r['images']} | {r['seconds']:.1f} | {rate:.0f} | {rate / peer:.2f} |"
                f" {r['peak_process_rss_mb']:.0f} | {r['peak_tree_rss_mb']:.0f} |"
            )
    lines.append("")
    for n, by_run in runs.items():
        c, peer = by_run["collect"], by_run["img2dataset"]["images"] / by_run["img2dataset"]["seconds"]
        lines.append(
            f"- {n} URLs, collect: Ray start {c['ray_start_s']:.1f} s, plan {c['plan_s']:.1f} s, {c['shards']} shard"
            f" tasks {c['shards_s']:.1f} s ({c['images'] / c['shards_s']:.0f} images/s,"
            f" {c['images'] / c['shards_s'] / peer:.2f}x img2dataset's rate including its own start)."
        )
    if len(runs) > 1:  # time = intercept + slope x images, from the smallest and largest run
        (small, a), (large, b) = min(runs.items()), max(runs.items())
        lines += ["", f"By marginal cost, {small} to {large} URLs:", ""]
        lines += ["| run | ms per image (slope) | fixed seconds (intercept) | marginal rate / img2dataset's |"]
        lines += ["|---|---|---|---|"]
        slopes = {}
        for name in a:
            slope = (b[name]["seconds"] - a[name]["seconds"]) / (b[name]["images"] - a[name]["images"])
            slopes[name] = slope
            intercept = a[name]["seconds"] - slope * a[name]["images"]
            lines.append(f"| {name} | {slope * 1e3:.2f} | {intercept:.1f} | {slopes['img2dataset'] / slope:.2f} |")
    lines += ["", "RSS sums count pages shared between processes more than once."]
    return lines


if __name__ == "__main__":
    sys.exit(main())
