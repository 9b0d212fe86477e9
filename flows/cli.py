"""The `mmetl` command.

mmetl build RECIPE [--partition 2026-11-22] [--storage s3://bucket/prefix] [--dry-run]
mmetl backfill RECIPE --start 2026-01-01 --end 2026-01-31 [--concurrency 2]
mmetl serve RECIPE [--cron "0 2 * * *"]   the nightly build, scheduled by this process
mmetl status [RECIPE]           published versions and recent runs
mmetl inspect DATASET/PARTITION one version: counts, splits, reasons, a few items (--duplicates audio: its copies)
mmetl diff A B                  what changed between two versions, and why
mmetl takedown DATASET --list FILE  remove listed items from every version (a new revision each), for good
mmetl review export VERSION --rule R --band LOW:HIGH   borderline items for reviewers (Label Studio or CSV)
mmetl review import DATASET FILE   reviewers' verdicts, applied by every later build
mmetl ui                        the Prefect UI over the history of local runs

Here: the arguments, and each command wired from process supervision (flows/supervise.py) and what it
prints (flows/reports.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from . import reports
from .local_api import free_port, prefect_api, start_server, stop_server
from .supervise import check_recipe, prefect_home, supervised


def build(args: argparse.Namespace) -> int:
    if error := check_recipe(args, [args.partition]):
        print(f"error: {error}", file=sys.stderr)
        return 2
    with supervised(args, args.partition) as log:
        from .build import build_dataset  # imports prefect: only once the API is settled

        try:
            result = build_dataset(args.recipe, args.partition, args.storage, dry_run=args.dry_run)
        except Exception as e:  # the flow logged the traceback; say it plainly and exit non-zero
            where = "" if log.verbose else f" (the whole story: {log.uri})"
            print(f"\nerror: the build failed{where}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    print()
    reports.print_funnel(result)
    return 0


def backfill(args: argparse.Namespace) -> int:
    from tasks.core.partitions import days  # no prefect import: its settings are read once, at import

    try:
        partitions = days(args.start, args.end)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if error := check_recipe(args, partitions):
        print(f"error: {error}", file=sys.stderr)
        return 2
    with supervised(args, f"backfill-{args.start}-{args.end}"):
        from .backfill import backfill as backfill_flow

        state = backfill_flow(args.recipe, args.start, args.end, args.storage, args.concurrency, return_state=True)
        rows = state.result(raise_on_failure=False)
    if not isinstance(rows, list):  # the backfill itself failed (not one of its partitions)
        print(f"\nerror: the backfill failed: {rows}", file=sys.stderr)
        return 1
    print()
    reports.print_backfill(rows)
    return 1 if state.is_failed() else 0


def serve(args: argparse.Namespace) -> int:
    """Prefect's `serve`: this process schedules the recipe's nightly build and runs each run as a
    subprocess, with no work pool or worker. Without PREFECT_API_URL it keeps a local server up too."""
    if error := check_recipe(args, []):
        print(f"error: {error}", file=sys.stderr)
        return 2
    from tasks.recipe import load_recipe

    name = args.name or f"{load_recipe(args.recipe).name}-nightly"
    parameters = {"recipe_path": str(Path(args.recipe).absolute()), "storage_root": args.storage}
    with prefect_api(prefect_home()) as api_url:
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
    from tasks.core import storage
    from tasks.publish import catalog
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
    else:
        reports.print_status(root, versions, runs)
    return 0


def inspect(args: argparse.Namespace) -> int:
    from tasks.core import storage
    from tasks.publish import catalog
    from tasks.publish.diff import version_uri

    version = version_uri(storage.storage_root(args.storage), args.version)
    try:
        if args.duplicates:
            described = catalog.duplicates(version, args.duplicates)
        else:
            described = catalog.describe_version(version, args.samples)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(described, default=str))
    elif args.duplicates:
        reports.print_duplicates(described, args.duplicates)
    else:
        reports.print_version(described)
    return 0


def diff(args: argparse.Namespace) -> int:
    from tasks.core import storage
    from tasks.publish.diff import diff_versions, version_uri

    root = storage.storage_root(args.storage)
    try:
        found = diff_versions(version_uri(root, args.a), version_uri(root, args.b))
    except FileNotFoundError as e:
        print(f"error: no such version: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(found, default=str))
    else:
        reports.print_diff(found)
    return 0


def takedown(args: argparse.Namespace) -> int:
    from tasks.core import storage
    from tasks.publish.takedown import take_down

    try:
        done = take_down(storage.storage_root(args.storage), args.dataset, args.list, args.reason)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(done))
        return 0
    print(f"takedown {done['takedown']}:")
    for partition, revised in done["versions"].items():
        print(f"  {partition}: revision {revised['revision']}, {revised['removed']} items removed")
    if not done["versions"]:
        print("  no published version holds a listed item (the list now blocks later builds)")
    return 0


def review(args: argparse.Namespace) -> int:
    from tasks.core import storage
    from tasks.publish import review as loop
    from tasks.publish.diff import version_uri

    root = storage.storage_root(args.storage)
    try:
        if args.action == "import":
            read = loop.import_reviews(root, args.target, args.file)
            applied = loop.apply_rejections(root, args.target) if args.apply else None
            print(json.dumps({**read, **({"applied": applied} if applied else {})}))
            return 0
        low, high = (float(x) for x in args.band.split(":"))
        rows = loop.export_review(version_uri(root, args.target), args.rule, (low, high), args.limit)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.format == "csv":
        text = loop.csv_rows(rows, args.rule)
    else:
        text = json.dumps(loop.label_studio_tasks(rows, args.rule), indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text)
        print(f"{len(rows)} rows for review in {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


def ui(args: argparse.Namespace) -> int:
    home = prefect_home()
    port = args.port or free_port()
    print(f"Prefect UI over {home}: http://127.0.0.1:{port}  (Ctrl-C stops it)")
    process = start_server(home, port)
    try:
        return process.wait()
    except KeyboardInterrupt:
        stop_server(process)
        return 0


def _add_reading_commands(sub) -> None:
    """The commands that read what is published: status, inspect, diff."""
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
    p = sub.add_parser("diff", help="what changed between two published versions: items, reasons, recipe, code")
    p.add_argument("a", help="the earlier version: <dataset>/<partition>, or a version folder or URI")
    p.add_argument("b", help="the later version, named the same way")
    p.add_argument("--storage", help="storage root; default $MMETL_STORAGE or ./data")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=diff)
    p = sub.add_parser("takedown", help="remove listed items from every published version of a dataset, for good")
    p.add_argument("dataset", help="the dataset's name (its folder under the storage root)")
    p.add_argument("--list", required=True, help="entries `<kind>:<value>` a line (id, sha256, phash, chromaprint, "
                   "url, domain), or a CSV or Parquet file with columns kind,value")  # fmt: skip
    p.add_argument("--reason", default="takedown request", help="recorded with what is removed")
    p.add_argument("--storage", help="storage root; default $MMETL_STORAGE or ./data")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=takedown)
    p = sub.add_parser("review", help="borderline items out to reviewers, their verdicts back in")
    p.add_argument("action", choices=["export", "import"])
    p.add_argument("target", help="export: a version (<dataset>/<partition> or a folder); import: the dataset's name")
    p.add_argument("file", nargs="?", help="import: Label Studio's JSON export, or a CSV (sample_id,text,rule,verdict)")
    p.add_argument("--rule", default="align_score", help="export: the score a rule judges (align_score, min_side, ...)")
    p.add_argument("--band", default="0:1", help="export: the values LOW:HIGH to review, e.g. 0.24:0.30")
    p.add_argument("--limit", type=int, help="export: at most this many rows, nearest the band's middle first")
    p.add_argument("--format", choices=["label-studio", "csv"], default="label-studio")
    p.add_argument("--out", help="export: write here instead of printing")
    p.add_argument("--apply", action="store_true", help="import: also take the rejected items out of the "
                   "published versions (a takedown: for good)")  # fmt: skip
    p.add_argument("--storage", help="storage root; default $MMETL_STORAGE or ./data")
    p.set_defaults(func=review)


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
    _add_reading_commands(sub)
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
