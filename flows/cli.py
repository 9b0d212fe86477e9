"""The `mmetl` command.

mmetl build RECIPE [--partition 2026-11-22] [--storage s3://bucket/prefix] [--dry-run]
mmetl backfill RECIPE --start 2026-01-01 --end 2026-01-31 [--concurrency 2]
mmetl serve RECIPE [--cron "0 2 * * *"]   the nightly build, scheduled by this process
mmetl status [RECIPE]           published versions and recent runs
mmetl inspect DATASET/PARTITION one version: counts, splits, reasons, a few items (--duplicates audio: its copies)
mmetl ui                        the Prefect UI over the history of local runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import sys
import traceback
from collections import Counter
from pathlib import Path

from .local_api import free_port, prefect_api, start_server, stop_server

FLOW_MODULE = "flows.build"  # imported by each Ray worker ahead of its first task


def _prefect_home() -> Path:
    return Path(os.environ.get("MMETL_PREFECT_HOME", "./data/prefect")).absolute()


def check_recipe(args: argparse.Namespace, partitions: list[str]) -> str | None:
    """Fail fast, before starting any server: a bad recipe, a storage root this machine cannot write, or
    a source that is not there. A source read per partition may have no drop for one: its build says so,
    that is not an error. Returns the error, in one line (with --verbose, its traceback is printed too)."""
    if args.storage:
        os.environ["MMETL_STORAGE"] = args.storage
    if args.ray_address:
        os.environ["MMETL_RAY_ADDRESS"] = args.ray_address
    from tasks import storage
    from tasks.recipe import RecipeError, load_recipe
    from tasks.sources import sources_for_partition

    try:
        recipe = load_recipe(args.recipe)
        storage.check_writable(storage.storage_root(args.storage))
        for partition in partitions:
            for source in sources_for_partition(recipe.all_sources, partition)[0]:
                if getattr(source, "synthesize_demo", False):
                    continue
                try:
                    found = storage.exists(source.uri)
                except Exception as e:  # credentials, permissions: the same one line as for the root
                    raise RecipeError(f"source {source.name}: cannot read {source.uri}: {storage.cause(e)}") from e
                if not found:
                    raise RecipeError(f"{args.recipe}: source {source.name}: uri {source.uri} does not exist")
    except (ValueError, storage.StorageUnreachable) as e:  # RecipeError, SourceError, a partition not a date
        if getattr(args, "verbose", False):
            traceback.print_exception(e)
        return str(e)
    return None


def build(args: argparse.Namespace) -> int:
    if error := check_recipe(args, [args.partition]):
        print(f"error: {error}", file=sys.stderr)
        return 2
    with prefect_api(_prefect_home(), while_starting=ray_starter(args.verbose)) as api_url:
        from .build import build_dataset  # imports prefect: only once the API is settled

        print(f"Prefect API: {api_url}")
        with RunLog(args, _dataset(args), args.partition) as log:
            try:
                result = build_dataset(args.recipe, args.partition, args.storage, dry_run=args.dry_run)
            except Exception as e:  # the flow logged the traceback; say it plainly and exit non-zero
                where = "" if log.verbose else f" (the whole story: {log.uri})"
                print(f"\nerror: the build failed{where}: {type(e).__name__}: {e}", file=sys.stderr)
                return 1
            finally:
                flush_prefect_logs()  # ship buffered logs while the API is still up
                stop_ray()

    print()
    print_funnel(result)
    return 0


def backfill(args: argparse.Namespace) -> int:
    from tasks.partitions import days  # no prefect import: its settings are read once, at import

    try:
        partitions = days(args.start, args.end)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if error := check_recipe(args, partitions):
        print(f"error: {error}", file=sys.stderr)
        return 2
    with prefect_api(_prefect_home(), while_starting=ray_starter(args.verbose)) as api_url:
        from .backfill import backfill as backfill_flow

        print(f"Prefect API: {api_url}")
        with RunLog(args, _dataset(args), f"backfill-{args.start}-{args.end}"):
            try:
                state = backfill_flow(
                    args.recipe, args.start, args.end, args.storage, args.concurrency, return_state=True
                )
                rows = state.result(raise_on_failure=False)
            finally:
                flush_prefect_logs()
                stop_ray()
    if not isinstance(rows, list):  # the backfill itself failed (not one of its partitions)
        print(f"\nerror: the backfill failed: {rows}", file=sys.stderr)
        return 1
    print()
    print(f"{'partition':<12}{'state':<20}{'items':>8}{'rejected':>10}{'seconds':>9}  detail")
    for row in rows:
        print(
            f"{row['partition']:<12}{row['state']:<20}{_blank(row['items']):>8}{_blank(row['rejected']):>10}"
            f"{row['seconds']:>9.1f}  {row['detail']}"
        )
    return 1 if state.is_failed() else 0


def _dataset(args: argparse.Namespace) -> str:
    from tasks.recipe import load_recipe

    return load_recipe(args.recipe).name


def _blank(value) -> str:
    return "" if value is None else str(value)


def ray_starter(verbose: bool):
    def start_ray(api_url: str) -> None:
        """Start Ray and its workers, then import the flow (Prefect, the stages): seconds of work that
        overlap the Prefect server's start."""
        from .ray_env import start_ray

        start_ray(api_url, quiet=not verbose, preload=FLOW_MODULE)
        importlib.import_module(FLOW_MODULE)

    return start_ray


class RunLog:
    """Unless --verbose, Prefect's console lines go to a log file instead of the terminal (the UI
    has them either way) and each step draws a progress bar. The file lives under the storage root:
    `<root>/<dataset>/logs/<partition>-<UTC time>.log` (written locally and copied there when the root
    is a bucket)."""

    def __init__(self, args: argparse.Namespace, dataset: str, partition: str):
        from tasks import storage

        self.verbose = args.verbose
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        self.uri = storage.join(storage.storage_root(args.storage), dataset, "logs", f"{partition}-{stamp}.log")
        local = storage.local_path(self.uri)
        self.copy_when_done = local is None  # a bucket: written here, copied there at the end
        self.path = Path(local) if local else _prefect_home() / "logs" / self.uri.rsplit("/", 1)[-1]

    def __enter__(self):
        if self.verbose:
            return self
        import logging

        from prefect.logging.handlers import PrefectConsoleHandler

        from . import progress

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s - %(message)s"))
        for logger in [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict)]:
            for old in [h for h in logger.handlers if isinstance(h, PrefectConsoleHandler)]:
                logger.removeHandler(old)
                logger.addHandler(handler)
        progress.use_bars()
        print(f"Log: {self.uri}  (--verbose: on this terminal instead)")
        return self

    def __exit__(self, *exc):
        if not self.verbose and self.copy_when_done and self.path.exists():
            from tasks import storage

            storage.write_bytes(self.uri, self.path.read_bytes())


def stop_ray() -> None:
    import ray

    ray.shutdown()


def flush_prefect_logs() -> None:
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)


def print_dry_run(result: dict) -> None:
    from tasks.audit import histogram_line

    print(f"{'stage':<10}{'in':>8}{'kept':>8}{'rejected':>10}  reasons")
    for step in result["funnel"]:
        reasons = ", ".join(f"{r}={n}" for r, n in step["reasons"].items())
        print(f"{step['stage']:<10}{step['in']:>8}{step['kept']:>8}{step['rejected']:>10}  {reasons}")
    print(
        f"\ndedupe would reject {result['dedupe'].get('duplicates', 0)} items: "
        f"{', '.join(f'{r}={n}' for r, n in result['dedupe'].get('by_reason', {}).items()) or 'none'}"
    )
    report = result["dry_run"]
    print("\nEach filter rule on its own, per source (items rejected / texts dropped):")
    print(f"  {'source':<16}{'rule':<28}{'items':>8}{'texts':>8}")
    for line in report["rules"]:
        print(f"  {line['source']:<16}{line['rule']:<28}{line['items']:>8}{line['texts']:>8}")
    for source, counts in report["kept"].items():
        print(f"With every rule, {source} keeps {counts['kept']} of {counts['of']} items")
    print("\nScores (10 equal bins from min to max):")
    for name, h in report["histograms"].items():
        if h["min"] == h["max"]:
            print(f"  {name:<22}all {h['min']:.3g}, n={sum(h['counts'])}")
        else:
            print(f"  {name:<22}{h['min']:>10.3g} {histogram_line(h['counts'])} {h['max']:<10.3g} n={sum(h['counts'])}")
    print("\nDry run: nothing was published.")


def print_funnel(result: dict) -> None:
    if "dry_run" in result:
        return print_dry_run(result)
    if result.get("nothing_to_build"):
        print(f"Nothing to build: {result['nothing_to_build']}")
        return
    manifest = result["manifest"]
    if result["skipped"]:
        print(f"Already published (nothing changed): {result['version']}")
        return
    print(f"{'stage':<10}{'in':>8}{'kept':>8}{'rejected':>10}  reasons")
    for step in result["funnel"]:
        reasons = ", ".join(f"{r}={n}" for r, n in step["reasons"].items())
        print(f"{step['stage']:<10}{step['in']:>8}{step['kept']:>8}{step['rejected']:>10}  {reasons}")
        if "items" in step:
            print(f"{'':<10}{'':>8}{step['items']:>8}  items: the annotation rows of one media file are one item")
    dropped = Counter()
    for step in result["funnel"]:
        dropped.update(step["texts_dropped"])
    if dropped:
        print(f"\nTexts dropped from kept items: {', '.join(f'{r}={n}' for r, n in sorted(dropped.items()))}")
    from tasks import storage

    stats = storage.read_json(storage.join(result["version"], "stats.json"))
    print_download_failures(stats)
    print_caption_duplicates(stats.get("dedupe", {}))
    splits = ", ".join(f"{name}={s['samples']}" for name, s in manifest["splits"].items())
    print(
        f"\nPublished {manifest['samples']} items with {manifest['texts']} texts ({splits});"
        f" {manifest['rejected']} items rejected"
    )
    for name in manifest.get("strata_off_target", []):
        shares = stats["strata"][name]["shares"]
        print(f"Stratum {name} is more than 2 points off its split shares: {shares}")
    print(f"Version: {result['version']}  (data card: README.md)")


def print_download_failures(stats: dict) -> None:
    if not stats.get("fetch_failures_by_source"):
        return
    print("\nDownload failures by source:")
    for source, reasons in stats["fetch_failures_by_source"].items():
        counts = ", ".join(f"{reason.removeprefix('fetch:')}={n}" for reason, n in reasons.items())
        print(f"  {source:<16}{counts}")
    print(f"  top failing hosts: {', '.join(f'{host}={n}' for host, n in stats['top_failing_hosts'])}")


def print_caption_duplicates(report: dict) -> None:
    if report.get("caption_duplicates"):
        counts = ", ".join(f"{source}={n}" for source, n in report["caption_duplicates"].items())
        print(f"\nItems with a near-identical caption on another item (grouped together), by source: {counts}")
    for boilerplate in report.get("boilerplate", [])[:5]:
        print(
            f"Boilerplate caption on {boilerplate['items']} items (not used to group): {boilerplate['caption'][:80]!r}"
        )


def serve(args: argparse.Namespace) -> int:
    """Prefect's `serve`: this process schedules the recipe's nightly build and runs each run as a
    subprocess, with no work pool or worker. Without PREFECT_API_URL it keeps a local server up too."""
    if error := check_recipe(args, []):
        print(f"error: {error}", file=sys.stderr)
        return 2
    from tasks.recipe import load_recipe

    name = args.name or f"{load_recipe(args.recipe).name}-nightly"
    parameters = {"recipe_path": str(Path(args.recipe).absolute()), "storage_root": args.storage}
    with prefect_api(_prefect_home()) as api_url:
        from prefect.types.entrypoint import EntrypointType

        from .build import build_dataset

        print(f"Prefect API: {api_url}  (UI: {api_url.removesuffix('/api')})")
        try:  # Ctrl-C (or SIGTERM) stops serving; the schedule is paused until served again
            # each run loads the flow as flows.build (a module Ray workers can import), not by file path
            build_dataset.serve(
                name=name,
                cron=args.cron,
                parameters=parameters,
                entrypoint_type=EntrypointType.MODULE_PATH,
                description=f"{args.recipe} built every {args.cron!r} (UTC); partition = scheduled date",
            )
        except KeyboardInterrupt:
            pass
    return 0


def status(args: argparse.Namespace) -> int:
    from tasks import catalog, storage
    from tasks.recipe import RecipeError, load_recipe

    root = storage.storage_root(args.storage)
    dataset = "*"
    if args.recipe:
        try:
            dataset = load_recipe(args.recipe).name
        except RecipeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    versions = [catalog.version_summary(m) for m in catalog.versions(root, dataset)]
    runs = catalog.recent_runs(root, dataset, args.runs)
    if args.json:
        print(json.dumps({"root": root, "versions": versions, "runs": runs}))
        return 0
    print(f"Published versions under {root}:")
    if not versions:
        print("  none")
    else:
        print(
            f"  {'dataset':<14}{'partition':<12}{'train':>8}{'val':>7}{'test':>7}{'rejected':>10}  {'published':<26}"
            f"{'build':<14}code"
        )
    for v in versions:
        n = v["samples"]
        print(
            f"  {v['dataset']:<14}{v['partition']:<12}{n['train']:>8}{n['val']:>7}{n['test']:>7}{v['rejected']:>10}"
            f"  {v['created_at']:<26}{v['build_key']:<14}{(v['stage_code_sha256'] or '')[:12]}"
        )
    print(f"\nRecent runs ({len(runs)}):")
    for run in runs:
        detail = run.get("error") or (f"{run['samples']} items" if run.get("samples") is not None else "")
        print(f"  {run['started_at']:<26}{run['dataset']:<14}{run['partition']:<12}{run['state']:<19}{detail[:100]}")
    if versions:
        print(
            "\nEach manifest.json holds the recipe and the code digest that built it: "
            "`mmetl inspect <dataset>/<partition>` shows one."
        )
    return 0


def inspect(args: argparse.Namespace) -> int:
    from tasks import catalog, storage
    from tasks.schema import SPLITS

    root = storage.storage_root(args.storage)
    version = args.version
    if not storage.exists(storage.join(version, "manifest.json")) and "/versions/" not in version:
        dataset, _, partition = version.partition("/")  # <dataset>/<partition> under the storage root
        version = storage.join(root, dataset, "versions", partition)
    if args.duplicates:
        return _list_duplicates(version, args.duplicates, args.json)
    try:
        described = catalog.describe_version(version, args.samples)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(described, default=str))
        return 0
    m, stats = described["manifest"], described["stats"]
    print(
        f"{m['dataset']} {m['partition']}: {m['samples']} items, {m['texts']} texts, {m['rejected']} rejected, "
        f"{m['texts_dropped']} texts dropped; published {m['created_at']}"
    )
    code = m.get("code") or {}
    print(
        f"  build {m['build_key']}, mmetl {code.get('mmetl')}, stage code {code.get('stage_code_sha256', '')[:12]}, "
        f"recipe {m['recipe']['name']} (the whole recipe is in manifest.json)"
    )
    print(f"  by modality: {', '.join(f'{k}={v}' for k, v in sorted(described['modalities'].items()))}")
    for name, split in sorted(m["splits"].items(), key=lambda kv: SPLITS.index(kv[0])):
        print(
            f"  {name:<6}{split['samples']:>8} items {split['groups']:>7} groups {len(split['tars']):>4} tars "
            f"{split['tar_bytes'] / 1e6:>10.1f} MB"
        )
    print("\nRejects by reason:")
    for reason, n in sorted(stats.get("rejects_by_reason", {}).items(), key=lambda kv: -kv[1]):
        print(f"  {reason:<32}{n:>8}")
    if stats.get("texts_dropped_by_reason"):
        print("Texts dropped by reason:")
        for reason, n in sorted(stats["texts_dropped_by_reason"].items(), key=lambda kv: -kv[1]):
            print(f"  {reason:<32}{n:>8}")
    print("\nA few items:")
    for sample in described["samples"]:
        facts = ", ".join(
            f"{k}={sample[k]:g}" if isinstance(sample[k], float) else f"{k}={sample[k]}"
            for k in ("width", "height", "duration_s")
            if sample.get(k) is not None
        )
        print(
            f"  [{sample['split']}] {sample['sample_id']} {sample['modality']} from {sample['source']}: "
            f"{sample['source_uri']} ({facts})"
        )
        for text in sample["texts"][:3]:
            print(f"      {text['kind']}: {text['text'][:100]}")
    return 0


def _list_duplicates(version: str, modality: str, as_json: bool) -> int:
    """One line per item a version rejected as a copy of `modality`, least verified first."""
    from tasks import catalog

    try:
        found = catalog.duplicates(version, modality)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(found))
        return 0
    unverified = sum(r["similarity"] is None and r["reason"] != "duplicate:exact" for r in found)
    print(f"{len(found)} {modality} items rejected as copies; {unverified} not verified on the media")
    for r in found:
        score = (
            "exact"
            if r["reason"] == "duplicate:exact"
            else ("not verified" if r["similarity"] is None else f"{r['similarity']:.3f}")
        )
        print(f"  {score:>12}  {r['sample_id']} copy of {r['duplicate_of']}: {r['source_uri']}")
        print(f"                {r['detail']}")
    return 0


def ui(args: argparse.Namespace) -> int:
    home = _prefect_home()
    port = args.port or free_port()
    print(f"Prefect UI over {home}: http://127.0.0.1:{port}  (Ctrl-C stops it)")
    process = start_server(home, port)
    try:
        return process.wait()
    except KeyboardInterrupt:
        stop_server(process)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmetl", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="build and publish one partition of a recipe's dataset")
    p.add_argument("recipe", help="path to a recipe YAML file, e.g. recipes/demo.yaml")
    p.add_argument(
        "--partition",
        default=dt.datetime.now(dt.UTC).date().isoformat(),
        help="partition (version) name; default: today's UTC date",
    )
    p.add_argument(
        "--storage", help="storage root (local path or s3://bucket/prefix); default $MMETL_STORAGE or ./data"
    )
    p.add_argument("--ray-address", help="existing Ray cluster; default $MMETL_RAY_ADDRESS or a local Ray")
    p.add_argument("--verbose", action="store_true", help="Ray's and Prefect's log lines on the terminal, not bars")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="collect, clean and dedupe, then print what each filter threshold would drop; publish nothing",
    )
    p.set_defaults(func=build)
    p = sub.add_parser("backfill", help="build every daily partition from --start to --end not yet published")
    p.add_argument("recipe")
    p.add_argument("--start", required=True, help="first partition, a date: 2026-01-01")
    p.add_argument("--end", required=True, help="last partition, included: 2026-01-31")
    p.add_argument("--concurrency", type=int, default=2, help="partitions built at once (default 2)")
    p.add_argument("--verbose", action="store_true", help="Ray's and Prefect's log lines on the terminal, not bars")
    p.add_argument("--storage", help="storage root; default $MMETL_STORAGE or ./data")
    p.add_argument("--ray-address", help="existing Ray cluster; default $MMETL_RAY_ADDRESS or a local Ray")
    p.set_defaults(func=backfill)
    p = sub.add_parser("serve", help="schedule the recipe's build with Prefect's serve: no work pool needed")
    p.add_argument("recipe")
    p.add_argument("--cron", default="0 2 * * *", help="when, in UTC (default: 02:00 every night)")
    p.add_argument("--name", help="deployment name (default: <recipe name>-nightly)")
    p.add_argument("--storage", help="storage root; default $MMETL_STORAGE or ./data")
    p.add_argument("--ray-address", help="existing Ray cluster; default $MMETL_RAY_ADDRESS or a local Ray per run")
    p.set_defaults(func=serve)
    p = sub.add_parser("status", help="published versions and recent build runs under the storage root")
    p.add_argument("recipe", nargs="?", help="only this recipe's dataset")
    p.add_argument("--storage", help="storage root; default $MMETL_STORAGE or ./data")
    p.add_argument("--runs", type=int, default=10, help="how many recent runs to list (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object: versions and runs")
    p.set_defaults(func=status)
    p = sub.add_parser("inspect", help="one published version: counts, splits, reasons, a few items")
    p.add_argument("version", help="<dataset>/<partition> under the storage root, or a version folder or URI")
    p.add_argument("--storage", help="storage root; default $MMETL_STORAGE or ./data")
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--json", action="store_true", help="one JSON object: manifest, stats, modalities, samples")
    p.add_argument(
        "--duplicates",
        choices=["image", "audio", "video"],
        help="list the items rejected as copies of this modality, with their verification scores",
    )
    p.set_defaults(func=inspect)
    p = sub.add_parser("ui", help="serve the Prefect UI over the local run history")
    p.add_argument("--port", type=int)
    p.set_defaults(func=ui)
    args = parser.parse_args(argv)
    return args.func(args)


def run() -> None:
    """The `mmetl` executable: main(), then exit at once. By then a build has stopped Ray and the
    Prefect server and shipped its logs; what is left is the interpreter's teardown of Prefect's, Ray's
    and PyAV's modules (~0.7 s of a build here). An exception still exits the ordinary way."""
    code = main()
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
