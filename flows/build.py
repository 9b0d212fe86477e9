"""build_dataset: collect -> clean -> dedupe -> filter -> align -> split -> publish, one partition.

Consecutive per-item stages of a shard run fused, as one Prefect task per (step, shard) on Ray,
between the global decisions:

    plan -> [collect + clean] -> dedupe decision -> [dedupe + filter + align] -> split decision
         -> [split + publish] -> commit

Tasks pass shard URIs and small summaries, never media bytes. Every task is safe to retry or rerun:
outputs have deterministic names and a marker written last, so committed work is skipped (this
replaces Prefect's result cache, which would need storage every worker can reach).
"""

from __future__ import annotations

from datetime import UTC

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect_ray.context import remote_options

from tasks import audit, catalog, collect, dedupe, dedupe_index, engine, publish, split, storage
from tasks.demo_corpus import build_demo_corpus
from tasks.recipe import Recipe, load_recipe
from tasks.registry import stage_class
from tasks.sources import Source, sources_for_partition

from . import progress
from .ray_env import worker_slots
from .runtime import MmetlRayTaskRunner

TASK_OPTIONS = dict(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, persist_result=False)


@task(**TASK_OPTIONS)
def synthesize_demo_corpus(folder: str) -> str:
    return build_demo_corpus(folder)


@task(**TASK_OPTIONS)
def plan_collect(sources: list[Source], recipe: Recipe, workers: int, layout: storage.Layout) -> dict:
    return collect.plan_collect(
        sources, layout.partition, run_id(layout), recipe.shards, workers, layout.step_dir("plan")
    )


@task(task_run_name="{step}-{shard}", **TASK_OPTIONS)
def run_step_shard(
    step: str,
    stages: list,
    shard: str,
    in_uri: str,
    out_dir: str,
    batch_items: int,
    batch_bytes: int,
    writes_media: bool,
) -> engine.StepResult:
    return engine.run_step(step, stages, in_uri, out_dir, batch_items, batch_bytes, writes_media)


@task(**TASK_OPTIONS)
def decide_duplicates(shard_uris: list[str], out_uri: str, config: dict, layout: storage.Layout) -> dict:
    snapshot = storage.join(layout.work, "published-items.parquet")
    published_uri = dedupe_index.snapshot(layout, snapshot) if config["against_published"] else None
    return dedupe.decide_duplicates(
        shard_uris, out_uri, **config, published_uri=published_uri, partition=layout.partition
    )


@task(task_run_name="audit-{shard}", **TASK_OPTIONS)
def audit_shard(shard: str, in_uri: str, decision_uri: str, thresholds: dict, out_dir: str) -> str:
    return audit.audit_shard(in_uri, decision_uri, thresholds, storage.join(out_dir, f"{shard}.json"))


@task(**TASK_OPTIONS)
def index_version(layout: storage.Layout, manifest: dict) -> None:
    dedupe_index.index_version(layout, manifest)


@task(**TASK_OPTIONS)
def assign_splits(shard_uris: list[str], recipe: Recipe, out_uri: str) -> dict:
    return split.assign_splits(shard_uris, recipe.split.ratios, recipe.split.salt, out_uri)


@task(task_run_name="split-publish-{shard}", **TASK_OPTIONS)
def split_and_publish_shard(
    shard: str, in_uri: str, media_uri: str, assignment_uri: str, recipe: Recipe, layout: storage.Layout
) -> tuple[engine.StepResult, dict]:
    split_result = engine.run_step(
        "split",
        [("split", {"assignment_uri": assignment_uri})],
        in_uri,
        layout.step_dir("split"),
        recipe.shards.batch_items,
        recipe.shards.batch_bytes,
    )
    staged = publish.publish_shard(
        split_result.uri, media_uri, layout.step_dir("publish"), remove_media=not recipe.keep_work
    )
    return split_result, staged


@task(**TASK_OPTIONS)
def commit_version(
    layout: storage.Layout,
    published: list[dict],
    reject_uris: list[str],
    dropped_text_uris: list[str],
    funnel: list[dict],
    recipe: Recipe,
    prefect_flow_run_id: str | None,
    decision: dict,
) -> dict:
    manifest = publish.commit_version(
        layout,
        published,
        reject_uris,
        dropped_text_uris,
        funnel,
        recipe.model_dump(mode="json"),
        extra={"prefect_flow_run_id": prefect_flow_run_id},
        withdrawn_uri=decision["withdrawn_uri"],
        dedupe_report=dedupe.report(decision),
    )
    if not recipe.keep_work:
        publish.discard_work(layout)
    return manifest


def run_id(layout: storage.Layout) -> str:
    return f"{layout.partition}-{layout.build_key}"


def run_step(
    stages: list[tuple[str, dict]],
    shard_uris: list[str],
    recipe: Recipe,
    layout: storage.Layout,
    items: int | None,
    writes_media: bool = False,
) -> list[engine.StepResult]:
    """Fan one fused step out over the shards, wait (reporting progress), and record it."""
    step = "-".join(name for name, _ in stages)
    out_dir = layout.step_dir(step)
    resources: dict[str, float] = {}  # what the neediest stage of the step asks for
    for name, _ in stages:
        for key, amount in stage_class(name).resources.items():
            resources[key] = max(resources.get(key, 0), amount)
    with remote_options(**resources):
        futures = run_step_shard.map(
            step=unmapped(step),
            stages=unmapped(stages),
            shard=[engine.shard_name(u) for u in shard_uris],
            in_uri=shard_uris,
            out_dir=unmapped(out_dir),
            batch_items=unmapped(recipe.shards.batch_items),
            batch_bytes=unmapped(recipe.shards.batch_bytes),
            writes_media=unmapped(writes_media),
        )
    results = wait_reporting(step, futures, items, lambda result: result.stages[0].n_in)
    for line in engine.commit_step(out_dir, results):
        log_funnel_line(line)
    return results


def wait_reporting(step: str, futures: list, items: int | None, items_of) -> list:
    """Every future's result, in the futures' order, reporting each shard as it finishes."""
    bar = progress.step(step, len(futures), items)
    try:
        for future in as_completed(futures):
            bar.done(items_of(future.result()))
    finally:
        bar.close()
    return [f.result() for f in futures]


def log_funnel_line(line: dict) -> None:
    get_run_logger().info(
        "%-8s in=%d kept=%d rejected=%d %s %s",
        line["stage"],
        line["in"],
        line["kept"],
        line["rejected"],
        line["reasons"] or "",
        line.get("texts_dropped") or "",
    )


@flow(name="build-dataset", task_runner=MmetlRayTaskRunner(), log_prints=True)
def build_dataset(
    recipe_path: str, partition: str | None = None, storage_root: str | None = None, dry_run: bool = False
) -> dict:
    """Build and publish one partition. Scheduled runs leave `partition` out: it is the scheduled date (UTC).
    A dry run stops after the dedupe decision and reports what the filters would drop: it publishes
    nothing, and a later build of the same recipe and partition reuses its downloads and clean shards."""
    partition = partition or flow_run.get_scheduled_start_time().astimezone(UTC).date().isoformat()
    recipe = load_recipe(recipe_path)
    layout = storage.Layout(storage.storage_root(storage_root), recipe.name, partition, recipe.fingerprint())
    run_id = str(flow_run.get_id() or "local")
    started = catalog.record_run(layout, run_id, "dry run" if dry_run else "running")
    try:
        result = _build(recipe, layout, dry_run)
    except Exception as e:
        catalog.record_run(layout, run_id, "failed", started, error=f"{type(e).__name__}: {e}"[:2000])
        raise
    if result.get("nothing_to_build"):
        state = "nothing to build"
    elif dry_run:
        state = "dry run"
    else:
        state = "already published" if result["skipped"] else "published"
    catalog.record_run(
        layout,
        run_id,
        state,
        started,
        samples=result.get("manifest", {}).get("samples"),
        rejected=result.get("manifest", {}).get("rejected"),
    )
    return result


def _build(recipe: Recipe, layout: storage.Layout, dry_run: bool) -> dict:
    logger = get_run_logger()
    partition = layout.partition
    if storage.exists(layout.version_manifest):
        manifest = publish.check_owner(layout, storage.read_json(layout.version_manifest))
        index_version.submit(layout, manifest).result()  # in case a crash came between the two
        logger.info("version %s is already published; nothing to do", layout.version)
        return {"version": layout.version, "manifest": manifest, "skipped": True}

    sources, absent = sources_for_partition(recipe.all_sources, partition)
    for source in absent:
        logger.info("source %s has no drop for partition %s (%s)", source.name, partition, source.uri)
    if not sources:
        return {
            "version": layout.version,
            "nothing_to_build": f"no source has a drop for partition {partition}",
            "skipped": True,
        }
    for source in sources:
        if getattr(source, "synthesize_demo", False) and not storage.exists(source.uri):
            synthesize_demo_corpus.submit(source.uri.rsplit("/", 1)[0]).result()

    plan = plan_collect.submit(sources, recipe, worker_slots(), layout).result()
    funnel = [
        {
            "stage": "plan",
            "shards": len(plan["shards"]),
            "in": plan["n_rows"],
            "kept": plan["n_rows_kept"],
            "rejected": plan["n_rejected"],
            "items": plan["n_items"],
            "reasons": plan["reasons"],
            "texts_dropped": {},
        }
    ]
    log_funnel_line(funnel[0])

    fetch = {"cache_dir": storage.join(layout.work, "fetched"), **recipe.network.model_dump(mode="json")}
    ingested = run_step(
        [("collect", fetch), ("clean", recipe.clean_settings())],
        plan["shards"],
        recipe,
        layout,
        plan["n_items"],
        writes_media=True,
    )
    decision = decide_duplicates.submit(
        [r.uri for r in ingested],
        storage.join(layout.work, "dedupe-decision.parquet"),
        recipe.dedupe.model_dump(),
        layout,
    ).result()
    if dry_run:
        out_dir = layout.step_dir("audit")
        audits = audit_shard.map(
            shard=[r.shard for r in ingested],
            in_uri=[r.uri for r in ingested],
            decision_uri=unmapped(decision["uri"]),
            thresholds=unmapped(recipe.filter.model_dump()),
            out_dir=unmapped(out_dir),
        )
        funnel += engine.summarize(ingested)
        return {
            "version": layout.version,
            "dry_run": audit.summarize([a.result() for a in audits]),
            "funnel": funnel,
            "dedupe": dedupe.report(decision),
            "skipped": False,
        }
    cleaned = sum(r.stages[-1].n_kept for r in ingested)
    refined = run_step(
        [
            ("dedupe", {"decision_uri": decision["uri"]}),
            ("filter", recipe.filter.model_dump()),
            ("align", recipe.align.model_dump()),
        ],
        [r.uri for r in ingested],
        recipe,
        layout,
        cleaned,
    )
    assignment = assign_splits.submit(
        [r.uri for r in refined], recipe, storage.join(layout.work, "split-assignment.parquet")
    ).result()
    futures = split_and_publish_shard.map(
        shard=[r.shard for r in refined],
        in_uri=[r.uri for r in refined],
        media_uri=[r.media_uri for r in ingested],
        assignment_uri=unmapped(assignment["uri"]),
        recipe=unmapped(recipe),
        layout=unmapped(layout),
    )
    aligned = sum(r.stages[-1].n_kept for r in refined)
    split_results, published = zip(*wait_reporting("split-publish", futures, aligned, lambda r: r[0].stages[0].n_in))
    steps = [ingested, refined, list(split_results)]
    funnel += [line for results in steps for line in engine.summarize(results)]
    log_funnel_line(funnel[-1])
    manifest = commit_version.submit(
        layout,
        list(published),
        [plan["rejects_uri"]] + [r.rejects_uri for results in steps for r in results],
        [r.dropped_texts_uri for results in steps for r in results],
        funnel,
        recipe,
        flow_run.get_id(),
        decision,
    ).result()
    index_version.submit(layout, manifest).result()

    create_table_artifact(
        key=f"funnel-{recipe.name}".replace("_", "-"),
        table=[
            {**line, "reasons": _counts_text(line["reasons"]), "texts_dropped": _counts_text(line["texts_dropped"])}
            for line in funnel
        ],
        description=f"Funnel of {recipe.name} partition {partition}: in = kept + rejected at every stage",
    )
    create_markdown_artifact(
        key=f"version-{recipe.name}".replace("_", "-"),
        markdown=version_markdown(layout, manifest),
        description=f"Published version of {recipe.name} {partition}",
    )
    return {"version": layout.version, "manifest": manifest, "funnel": funnel, "skipped": False}


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={n}" for k, n in counts.items())


def version_markdown(layout: storage.Layout, manifest: dict) -> str:
    lines = [
        f"# {layout.dataset} {layout.partition}",
        "",
        f"Published to `{layout.version}`",
        "",
        "| split | items | texts | groups | modalities |",
        "|---|---|---|---|---|",
    ]
    for name, s in manifest["splits"].items():
        lines.append(f"| {name} | {s['samples']} | {s['texts']} | {s['groups']} | {_counts_text(s['modalities'])} |")
    lines += [
        "",
        f"Rejected items: {manifest['rejected']} (see `rejects.parquet`); dropped texts:"
        f" {manifest['texts_dropped']} (see `dropped_texts.parquet`)",
    ]
    return "\n".join(lines)
