"""Process supervision for the commands that build: the recipe checked before anything starts, the local
Prefect API and Ray brought up together, Prefect's console lines sent to a log file, and both shut down
cleanly (their logs shipped) whatever the build did."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .local_api import prefect_api

FLOW_MODULE = "flows.build"  # imported by each Ray worker ahead of its first task


def prefect_home() -> Path:
    return Path(os.environ.get("MMETL_PREFECT_HOME", "./data/prefect")).absolute()


def check_recipe(args: argparse.Namespace, partitions: list[str]) -> str | None:
    """Fail fast, before starting any server: a bad recipe, a storage root this machine cannot write, or
    a source that is not there. A source read per partition may have no drop for one: its build says so,
    that is not an error. Returns the error, in one line (with --verbose, its traceback is printed too)."""
    if args.storage:
        os.environ["MMETL_STORAGE"] = args.storage
    if args.ray_address:
        os.environ["MMETL_RAY_ADDRESS"] = args.ray_address
    from tasks.core import storage
    from tasks.recipe import RecipeError, load_recipe
    from tasks.sources import sources_for_partition

    try:
        recipe = load_recipe(args.recipe)
        storage.check_writable(storage.storage_root(args.storage))
        for partition in partitions:
            for source in sources_for_partition(recipe.all_sources, partition)[0]:
                if source.generated:
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


@contextmanager
def supervised(args: argparse.Namespace, log_name: str) -> Iterator[RunLog]:
    """The local Prefect API (Ray starting while it does), the run's log; on the way out, Prefect's
    buffered logs shipped while the API is still up, and Ray stopped."""
    with prefect_api(prefect_home(), while_starting=ray_starter(args.verbose)) as api_url:
        print(f"Prefect API: {api_url}")
        with RunLog(args, dataset_of(args), log_name) as log:
            try:
                yield log
            finally:
                flush_prefect_logs()
                stop_ray()


def dataset_of(args: argparse.Namespace) -> str:
    from tasks.recipe import load_recipe

    return load_recipe(args.recipe).name


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
        from tasks.core import storage

        self.verbose = args.verbose
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        self.uri = storage.join(storage.storage_root(args.storage), dataset, "logs", f"{partition}-{stamp}.log")
        local = storage.local_path(self.uri)
        self.copy_when_done = local is None  # a bucket: written here, copied there at the end
        self.path = Path(local) if local else prefect_home() / "logs" / self.uri.rsplit("/", 1)[-1]

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
            from tasks.core import storage

            storage.write_bytes(self.uri, self.path.read_bytes())


def stop_ray() -> None:
    import ray

    ray.shutdown()


def flush_prefect_logs() -> None:
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
