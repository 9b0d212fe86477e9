"""build_dataset: collect -> clean -> dedupe -> filter -> align -> split -> publish, one partition.

One Prefect task per (stage, shard), run on Ray; global decisions (dedupe, split assignment) are
single tasks. Tasks pass shard URIs and small summaries, never media bytes. Every task is safe to
retry or rerun: outputs have deterministic names and a marker written last, so committed work is
skipped (this replaces Prefect's result cache, which would need storage every worker can reach).
"""

from __future__ import annotations

from datetime import timezone

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect_ray.context import remote_options

from tasks import collect, dedupe, engine, publish, split, storage
from tasks.demo_corpus import build_demo_corpus
from tasks.recipe import Recipe, SourceConfig, load_recipe
from tasks.registry import stage_class

from .runtime import MmetlRayTaskRunner

TASK_OPTIONS = dict(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, persist_result=False)


@task(**TASK_OPTIONS)
def synthesize_demo_corpus(folder: str) -> str:
    return build_demo_corpus(folder)


@task(**TASK_OPTIONS)
def plan_collect(source: SourceConfig, shard_rows: int, layout: storage.Layout) -> dict:
    return collect.plan_collect(source, layout.partition, run_id(layout), shard_rows, layout.stage_dir("plan"))


@task(task_run_name="{stage}-{shard}", **TASK_OPTIONS)
def run_stage_shard(stage: str, config: dict, shard: str, in_uri: str, out_dir: str) -> engine.ShardResult:
    return engine.run_shard(stage, config, in_uri, out_dir)


@task(**TASK_OPTIONS)
def decide_duplicates(shard_uris: list[str], out_uri: str) -> dict:
    return dedupe.decide_duplicates(shard_uris, out_uri)


@task(**TASK_OPTIONS)
def assign_splits(shard_uris: list[str], recipe: Recipe, out_uri: str) -> dict:
    return split.assign_splits(shard_uris, recipe.split.ratios, recipe.split.salt, out_uri)


@task(task_run_name="publish-{shard}", **TASK_OPTIONS)
def publish_shard(shard: str, in_uri: str, staging_dir: str) -> dict:
    return publish.publish_shard(in_uri, staging_dir)


@task(**TASK_OPTIONS)
def commit_version(layout: storage.Layout, published: list[dict], reject_uris: list[str], funnel: list[dict],
                   recipe: Recipe, prefect_flow_run_id: str | None) -> dict:
    return publish.commit_version(layout, published, reject_uris, funnel, recipe.model_dump(mode="json"),
                                  extra={"prefect_flow_run_id": prefect_flow_run_id})


def run_id(layout: storage.Layout) -> str:
    return f"{layout.partition}-{layout.build_key}"


def run_stage(stage: str, config: dict, shard_uris: list[str], layout: storage.Layout):
    """Fan a stage out over shards, wait, commit the stage; return (kept shard URIs, funnel step, rejects)."""
    out_dir = layout.stage_dir(stage)
    with remote_options(**stage_class(stage).resources):
        futures = run_stage_shard.map(
            stage=unmapped(stage), config=unmapped(config), shard=[engine.shard_name(u) for u in shard_uris],
            in_uri=shard_uris, out_dir=unmapped(out_dir),
        )
    results = [f.result() for f in futures]
    step = engine.commit_stage(stage, out_dir, results)
    get_run_logger().info("%-8s in=%d kept=%d rejected=%d %s", stage, step["in"], step["kept"], step["rejected"],
                          step["reasons"] or "")
    return [r.uri for r in results], step, [r.rejects_uri for r in results]


@flow(name="build-dataset", task_runner=MmetlRayTaskRunner(), log_prints=True)
def build_dataset(recipe_path: str, partition: str | None = None, storage_root: str | None = None) -> dict:
    """Build and publish one partition. Scheduled runs leave `partition` out: it is the scheduled date (UTC)."""
    logger = get_run_logger()
    partition = partition or flow_run.get_scheduled_start_time().astimezone(timezone.utc).date().isoformat()
    recipe = load_recipe(recipe_path)
    layout = storage.Layout(storage.storage_root(storage_root), recipe.name, partition, recipe.fingerprint())
    if storage.exists(layout.version_manifest):
        manifest = publish.check_owner(layout, storage.read_json(layout.version_manifest))
        logger.info("version %s is already published; nothing to do", layout.version)
        return {"version": layout.version, "manifest": manifest, "skipped": True}

    source = recipe.source.resolved()
    if source.synthesize_demo and not storage.exists(source.uri):
        synthesize_demo_corpus.submit(source.uri.rsplit("/", 1)[0]).result()

    plan = plan_collect.submit(source, recipe.shard_rows, layout).result()
    funnel = [{"stage": "plan", "shards": len(plan["shards"]), "in": plan["n_in"], "kept": plan["n_kept"],
               "rejected": plan["n_rejected"], "reasons": plan["reasons"]}]
    rejects = [plan["rejects_uri"]]

    def stage(name: str, config: dict, shards: list[str]) -> list[str]:
        kept, step, stage_rejects = run_stage(name, config, shards, layout)
        funnel.append(step)
        rejects.extend(stage_rejects)
        return kept

    shards = stage("collect", {}, plan["shards"])
    shards = stage("clean", recipe.clean.model_dump(), shards)
    decision = decide_duplicates.submit(shards, storage.join(layout.work, "dedupe-decision.parquet")).result()
    shards = stage("dedupe", {"decision_uri": decision["uri"]}, shards)
    shards = stage("filter", recipe.filter.model_dump(), shards)
    shards = stage("align", recipe.align.model_dump(), shards)
    assignment = assign_splits.submit(shards, recipe, storage.join(layout.work, "split-assignment.parquet")).result()
    shards = stage("split", {"assignment_uri": assignment["uri"]}, shards)

    names = [engine.shard_name(u) for u in shards]
    published = publish_shard.map(shard=names, in_uri=shards, staging_dir=unmapped(layout.stage_dir("publish")))
    manifest = commit_version.submit(layout, [p.result() for p in published], rejects, funnel, recipe,
                                     flow_run.get_id()).result()

    create_table_artifact(
        key=f"funnel-{recipe.name}".replace("_", "-"),
        table=[{**step, "reasons": ", ".join(f"{r}={n}" for r, n in step["reasons"].items())} for step in funnel],
        description=f"Funnel of {recipe.name} partition {partition}: in = kept + rejected at every stage",
    )
    create_markdown_artifact(
        key=f"version-{recipe.name}".replace("_", "-"),
        markdown=version_markdown(layout, manifest),
        description=f"Published version of {recipe.name} {partition}",
    )
    return {"version": layout.version, "manifest": manifest, "funnel": funnel, "skipped": False}


def version_markdown(layout: storage.Layout, manifest: dict) -> str:
    lines = [f"# {layout.dataset} {layout.partition}", "", f"Published to `{layout.version}`", "",
             "| split | samples | groups | modalities |", "|---|---|---|---|"]
    for name, s in manifest["splits"].items():
        lines.append(f"| {name} | {s['samples']} | {s['groups']} | "
                     f"{', '.join(f'{m}={n}' for m, n in s['modalities'].items())} |")
    lines += ["", f"Rejected: {manifest['rejected']} (see `rejects.parquet`)"]
    return "\n".join(lines)
