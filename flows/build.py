"""build_dataset: the build plan (tasks/build/pipeline.py) run by Prefect, on Ray.

Each shard of a step is one Prefect task on Ray (with the resources its stages ask for); each decision
between steps is one task. The step order itself is tasks/pipeline.execute, the same one the tests run
in-process. Tasks pass shard URIs and small summaries, never media bytes. Every task is safe to retry or
rerun: outputs have deterministic names and a marker written last, so committed work is skipped (this
replaces Prefect's result cache, which would need storage every worker can reach).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any

import ray
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect_ray.context import remote_options

from tasks.build.pipeline import Plan, execute
from tasks.core import storage
from tasks.publish import card, catalog
from tasks.recipe import Recipe, load_recipe

from . import progress
from .ray_env import worker_slots
from .runtime import MmetlRayTaskRunner

TASK_OPTIONS = dict(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, persist_result=False)


@task(**TASK_OPTIONS)
def run_step_shard(fn: Callable, args: tuple) -> Any:
    """One shard of a step, on a Ray worker."""
    return fn(*args)


@task(**TASK_OPTIONS)
def decide(fn: Callable, args: tuple) -> Any:
    """One decision over all shards."""
    return fn(*args)


class PrefectRayRunner:
    """The plan's pieces as Prefect tasks on the flow's Ray task runner, with a progress bar per step."""

    def __init__(self):
        self.workers = worker_slots()
        self.gpus = int(ray.cluster_resources().get("GPU", 0))
        self.logger = get_run_logger()

    def decide(self, name: str, fn: Callable, *args) -> Any:
        return decide.with_options(name=name).submit(fn, args).result()

    def each_shard(self, name, fn, calls, shards, resources, items) -> list:
        if resources.gpus and not self.gpus:
            raise RuntimeError(f"step {name} asks for a GPU (align.device: cuda), and the Ray cluster has none")
        with remote_options(**resources.ray_options()):
            futures = [
                run_step_shard.with_options(task_run_name=f"{name}-{shard}").submit(fn, args)
                for args, shard in zip(calls, shards)
            ]
        bar = progress.step(name, len(futures), items)
        try:
            for future in as_completed(futures):
                bar.done(future.result().items_in)
        finally:
            bar.close()
        return [f.result() for f in futures]

    def report(self, line: dict) -> None:
        self.logger.info(
            "%-8s in=%d kept=%d rejected=%d %s %s",
            line["stage"],
            line["in"],
            line["kept"],
            line["rejected"],
            line["reasons"] or "",
            line.get("texts_dropped") or "",
        )

    def log(self, message: str) -> None:
        self.logger.info(message)


@flow(name="build-dataset", task_runner=MmetlRayTaskRunner(), log_prints=True)
def build_dataset(
    recipe_path: str, partition: str | None = None, storage_root: str | None = None, dry_run: bool = False
) -> dict:
    """Build and publish one partition. Scheduled runs leave `partition` out: it is the scheduled date (UTC).
    A dry run stops after the dedupe decision and reports what the rules would drop: it publishes
    nothing, and a later build of the same recipe and partition reuses its downloads and clean shards."""
    partition = partition or flow_run.get_scheduled_start_time().astimezone(UTC).date().isoformat()
    recipe = load_recipe(recipe_path)
    layout = storage.Layout(storage.storage_root(storage_root), recipe.name, partition, recipe.fingerprint())
    run_id = str(flow_run.get_id() or "local")
    started = catalog.record_run(layout, run_id, "dry run" if dry_run else "running")
    try:
        result = execute(
            Plan(recipe, layout), PrefectRayRunner(), dry_run, extra={"prefect_flow_run_id": flow_run.get_id()}
        )
    except Exception as e:
        catalog.record_run(layout, run_id, "failed", started, error=f"{type(e).__name__}: {e}"[:2000])
        raise
    if result.get("nothing_to_build"):
        state = "nothing to build"
    elif dry_run:
        state = "dry run"
    else:
        state = "already published" if result["skipped"] else "published"
    manifest = result.get("manifest", {})
    catalog.record_run(
        layout, run_id, state, started, samples=manifest.get("samples"), rejected=manifest.get("rejected")
    )
    if state == "published":
        publish_artifacts(recipe, layout, result)
    return result


def publish_artifacts(recipe: Recipe, layout: storage.Layout, result: dict) -> None:
    """The funnel and the version's data card, on the flow run's Artifacts tab."""
    create_table_artifact(
        key=f"funnel-{recipe.name}".replace("_", "-"),
        table=[
            {**line, "reasons": _counts_text(line["reasons"]), "texts_dropped": _counts_text(line["texts_dropped"])}
            for line in result["funnel"]
        ],
        description=f"Funnel of {recipe.name} partition {layout.partition}: in = kept + rejected at every stage",
    )
    create_markdown_artifact(
        key=f"version-{recipe.name}".replace("_", "-"),
        markdown=card.body(storage.read_bytes(storage.join(layout.version, "README.md"))),
        description=f"Published version of {recipe.name} {layout.partition}",
    )


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={n}" for k, n in counts.items())
