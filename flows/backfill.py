"""backfill: build a range of daily partitions of one recipe, each a child `build-dataset` flow run.

At most `concurrency` partitions build at once (their shards share one Ray). A partition already
published is skipped by its own run, so an interrupted backfill is resumed by running it again; a
partition stopped midway reuses its committed shards. A partition that fails does not stop the others;
the backfill run ends Failed, with its summary table, if any did.
"""

from __future__ import annotations

import time

import ray
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.settings import get_current_settings
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.core import storage
from tasks.core.partitions import days
from tasks.recipe import load_recipe

from . import progress
from .build import build_dataset
from .ray_env import start_ray

MAX_CONCURRENCY = 8


def outcome(partition: str, result: dict, seconds: float) -> dict:
    """One line of the summary table."""
    row = {
        "partition": partition,
        "state": "published",
        "items": None,
        "rejected": None,
        "seconds": round(seconds, 1),
        "detail": "",
    }
    if result.get("nothing_to_build"):
        row.update(state="nothing to build", detail=result["nothing_to_build"])
    elif result.get("skipped"):
        row.update(
            state="already published", items=result["manifest"]["samples"], rejected=result["manifest"]["rejected"]
        )
    else:
        row.update(items=result["manifest"]["samples"], rejected=result["manifest"]["rejected"])
    return row


@task(task_run_name="partition-{partition}", cache_policy=NO_CACHE, persist_result=False)
def build_partition(recipe_path: str, partition: str, storage_root: str | None) -> dict:
    started = time.monotonic()
    recipe = load_recipe(recipe_path)
    layout = storage.Layout(storage.storage_root(storage_root), recipe.name, partition, recipe.fingerprint())
    if storage.exists(layout.version_manifest):
        manifest = storage.read_json(layout.version_manifest)
        if manifest["build_key"] != layout.build_key:  # by another recipe or code version: immutable, left as is
            return {
                "partition": partition,
                "state": "published earlier",
                "items": manifest["samples"],
                "rejected": manifest["rejected"],
                "seconds": 0.0,
                "detail": f"by build {manifest['build_key']} (this is {layout.build_key})",
            }
    try:
        result = build_dataset(recipe_path, partition, storage_root)  # a child flow run of its own in the UI
    except Exception as e:  # recorded and reported; the other partitions go on
        return {
            "partition": partition,
            "state": "failed",
            "items": None,
            "rejected": None,
            "seconds": round(time.monotonic() - started, 1),
            "detail": f"{type(e).__name__}: {e}",
        }
    return outcome(partition, result, time.monotonic() - started)


@flow(name="backfill", task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY), log_prints=True)
def backfill(
    recipe_path: str, start: str, end: str, storage_root: str | None = None, concurrency: int = 2
) -> list[dict]:
    """Build every daily partition from `start` to `end` (inclusive) that is not published yet."""
    logger = get_run_logger()
    recipe = load_recipe(recipe_path)  # a bad recipe fails here, once, not once per partition
    partitions = days(start, end)
    concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
    owns_ray = not ray.is_initialized()
    if owns_ray:  # one Ray for every child: a child that started its own would stop it under the others
        start_ray(get_current_settings().api.url)
    pending, running, rows = list(partitions), [], []
    began = time.monotonic()
    overall = progress.step("backfill", len(partitions), len(partitions), unit="partition")
    try:
        while pending or running:
            while pending and len(running) < concurrency:
                running.append(build_partition.submit(recipe_path, pending.pop(0), storage_root))
            done = next(as_completed(running))
            running.remove(done)
            rows.append(done.result())
            overall.done(1)
            elapsed = time.monotonic() - began
            eta = elapsed / len(rows) * (len(partitions) - len(rows))
            logger.info(
                "backfill %d/%d partitions done (%s: %s), about %.0f s left",
                len(rows),
                len(partitions),
                rows[-1]["partition"],
                rows[-1]["state"],
                eta,
            )
    finally:
        overall.close()
        if owns_ray:
            ray.shutdown()
    rows.sort(key=lambda r: r["partition"])
    create_table_artifact(
        key=f"backfill-{recipe.name}".replace("_", "-"),
        table=rows,
        description=f"Backfill of {recipe.name} from {start} to {end}",
    )
    failed = [r["partition"] for r in rows if r["state"] == "failed"]
    if failed:  # the run is Failed in the UI, and its summary still reaches the caller
        return Failed(
            message=f"{len(failed)} of {len(rows)} partitions failed: {', '.join(failed)} (run the "
            f"backfill again to retry them; the others are skipped)",
            data=rows,
        )
    return rows
