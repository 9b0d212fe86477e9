"""The build as data: one plan from a recipe, one order of steps, two runners.

    plan ─▶ [collect + clean] ─▶ dedupe decision ─▶ [dedupe + filter + align] ─▶ (documents decision)
         ─▶ split decision ─▶ leakage guard ─▶ [(documents +) split] ─▶ tar plan ─▶ [one tar] ─▶ commit

With alignment models in the recipe (or `dedupe.semantic.captions`' sentence model), scoring is a step of its
own (its workers ask for GPUs where the cluster has them): [dedupe + filter] ─▶ [score + align]. With
`generate.transcript` and `generate.caption`, the texts are written after dedupe and before the filter:
[dedupe + transcribe + caption + filter + align]. With `dedupe.semantic`, a decision over the score step's
embeddings follows it, and its step applies it: ─▶ semantic decision ─▶ [semantic].

A bracketed `Step` is consecutive per-item stages fused over each shard: one unit of work per shard,
the items streaming through every stage of it batch by batch. Between steps, a decision reads all
shards once. `Plan` says which stages, with which settings; `execute` walks the order above, once,
for every caller. A `Runner` says where each piece runs: `LocalRunner` in this process (tests, kill
tests, debugging a recipe without Prefect or Ray); flows/build.py runs each shard as a Prefect task on
Ray and each decision as one task. Adding a per-item stage is its class (tasks/build/registry.py) and one
line in a step below.

Work units pass shard URIs and small summaries, never media bytes. Each is safe to rerun: outputs have
deterministic names and a marker written last, so committed work is skipped.
"""

from __future__ import annotations

import functools
import operator
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from ..core import storage
from ..core.stored_media import StoredMedia
from ..demo.corpus import build_demo_corpus
from ..publish import commit as publish
from ..publish import leakage, tars
from ..published import index as published_index
from ..recipe import Recipe
from ..sources import sources_for_partition
from ..stages import collect, dedupe, documents, split
from ..stages.align import AlignRules
from ..stages.blocklist import BlocklistFile, BlocklistSettings
from ..stages.caption import CaptionSettings
from ..stages.clean import CleanSettings
from ..stages.collect import CollectConfig
from ..stages.dedupe import ApplyDecision
from ..stages.dedupe.semantic import Published, SemanticDecision, decide_semantic
from ..stages.documents import ApplyDocuments
from ..stages.filter import FilterSettings
from ..stages.generate import generate_report
from ..stages.score import ScoreSettings, ScoringConfig, report
from ..stages.split import ApplySplit
from ..stages.stage import Resources
from ..stages.transcribe import TranscribeSettings
from . import audit, engine
from .registry import check_order, stage_class


@dataclass(frozen=True)
class Step:
    """Consecutive per-item stages (name, settings), fused over each shard."""

    name: str
    stages: tuple[tuple[str, dict], ...]
    out_dir: str
    batch_items: int
    batch_bytes: int
    writes_media: bool = False  # the step that produces media writes it once, beside its shards

    def resources(self, gpus: int = 0) -> Resources:
        return needs_of(self.stages, gpus)

    def run(self, in_uri: str) -> engine.StepResult:
        return engine.run_step(
            self.name, list(self.stages), in_uri, self.out_dir, self.batch_items, self.batch_bytes, self.writes_media
        )


def needs_of(stages: tuple[tuple[str, dict], ...], gpus: int) -> Resources:
    """What one shard of these stages needs from a worker of a cluster with `gpus` GPUs: the most of
    each that any of them asks for."""
    return functools.reduce(operator.or_, (stage_class(n).resources_for(s, gpus) for n, s in stages), Resources())


@dataclass(frozen=True)
class Plan:
    """What a build of `recipe` into `layout` runs: its steps and where their work goes."""

    recipe: Recipe
    layout: storage.Layout

    def __post_init__(self):
        check_order([name for step in self.steps() for name, _ in step.stages])

    def steps(self) -> list[Step]:
        """Every step of a build, in order (decisions' outputs as placeholders): what the order check reads."""
        score = self.score()
        semantic = [self.semantic("-")] if self.recipe.dedupe.semantic.parts() else []
        return [self.ingest(), self.refine("-"), *([score] if score else []), *semantic, self.split("-", "-")]

    def step(self, *stages: tuple[str, BaseModel], writes_media: bool = False) -> Step:
        """A step of these stages, each with its settings model, written down as plain data (it travels to
        workers, and each stage validates it back into its model)."""
        settings = tuple((name, model.model_dump(mode="json")) for name, model in stages)
        name = "-".join(name for name, _ in stages)
        shards = self.recipe.shards
        return Step(name, settings, self.layout.step_dir(name), shards.batch_items, shards.batch_bytes, writes_media)

    def ingest(self) -> Step:
        r = self.recipe
        blocked = self.blocklist
        fetch = CollectConfig(**r.network.model_dump(), cache_dir=self.work("fetched"), blocklist=blocked)
        clean = CleanSettings(**r.clean.model_dump(), features=r.features)
        scenes = [("scenes", r.clean.video.scenes)] if r.clean.video.scenes else []  # cut before clean decodes
        after = [("blocklist", blocked)] if blocked.files else []  # the normalised media and its pictures
        return self.step(("collect", fetch), *scenes, ("clean", clean), *after, writes_media=True)

    @property
    def blocklist(self) -> BlocklistSettings:
        """The recipe's lists and the dataset's own takedowns; a pHash entry without a radius uses dedupe's."""
        taken_down = [BlocklistFile(file=self.layout.takedowns)] if storage.exists(self.layout.takedowns) else []
        dedupe = self.recipe.dedupe
        return BlocklistSettings(
            files=(*self.recipe.blocklist, *taken_down),
            radius=8 if dedupe.image_radius is None else dedupe.image_radius,
            max_ber=dedupe.audio_max_ber or 0.15,
        )

    def refine(self, decision_uri: str) -> Step:
        r = self.recipe
        stages = [("dedupe", ApplyDecision(decision_uri=decision_uri))]
        media = self.ingest().out_dir
        if r.generate.transcript:  # after dedupe (no copy is transcribed), before the filter judges its `wer`
            stages.append(("transcribe", TranscribeSettings(**r.generate.transcript.model_dump(), media_dir=media)))
        if r.generate.caption:  # as transcripts: its text goes through the filter and align like the others
            stages.append(("caption", CaptionSettings(**r.generate.caption.model_dump(), media_dir=media)))
        stages += [] if self.filter_after_scoring else [("filter", self.filtering)]
        return self.step(*stages) if self.embeds else self.step(*stages, ("align", self.align_rules))

    @property
    def align_rules(self) -> AlignRules:
        """The align stage's settings: align's own, whether a generated caption replaces the item's, the reviews."""
        caption = self.recipe.generate.caption
        replacing = caption is not None and caption.mode == "replace_if_better"
        return self.recipe.align.rules().model_copy(update={"replace_if_better": replacing, "reviews": self.reviews})

    @property
    def filtering(self) -> FilterSettings:
        return self.recipe.filtering.model_copy(update={"reviews": self.reviews})

    @property
    def reviews(self) -> str | None:
        """The dataset's reviewers' verdicts, where there are any: the rule stages apply them."""
        return self.layout.reviews if storage.exists(self.layout.reviews) else None

    @property
    def embeds(self) -> bool:
        """Whether the build has a score step: align models, or semantic caption dedupe's sentence model."""
        return self.recipe.align.scoring or self.recipe.dedupe.semantic.captions is not None

    @property
    def filter_after_scoring(self) -> bool:
        """The filter judges the heads' scores (aesthetic, nsfw) when there are heads: it runs after them."""
        heads = self.recipe.align.heads
        return bool(heads.aesthetic or heads.nsfw)

    def score(self) -> Step | None:
        """Alignment scores and the rules on them, when the recipe names models: a step of its own."""
        r = self.recipe
        if not self.embeds:
            return None
        captions = r.dedupe.semantic.captions
        scoring = ScoreSettings(
            **r.align.model_dump(include=set(ScoringConfig.model_fields)),
            media_dir=self.ingest().out_dir,
            embeddings_dir=self.embeddings_dir,
            caption_model=captions.model if captions else None,
        )
        after = [("filter", self.filtering)] if self.filter_after_scoring else []
        return self.step(("score", scoring), *after, ("align", self.align_rules))

    def embeddings_of(self, shard: str) -> str | None:
        return storage.join(self.embeddings_dir, f"{shard}.embeddings.parquet") if self.embeddings_dir else None

    @property
    def embeddings_dir(self) -> str | None:
        """Where the score step keeps its embeddings: for semantic dedupe, and to publish them (which semantic
        dedupe does too: the next partition compares with them)."""
        r = self.recipe
        return self.layout.step_dir("embeddings") if r.align.keep_embeddings or r.dedupe.semantic.parts() else None

    def semantic(self, decision_uri: str) -> Step:
        return self.step(("semantic", ApplyDecision(decision_uri=decision_uri)))

    def judging(self, decision_uri: str) -> tuple[tuple[str, dict], ...]:
        """The stages between the dedupe decision and the split: what a dry run runs."""
        score = self.score()
        return self.refine(decision_uri).stages + (score.stages if score else ())

    def split(self, assignment_uri: str, documents_uri: str | None = None, moves_uri: str | None = None) -> Step:
        """The split (with the leakage guard's moves), after the documents decision where there are documents."""
        first = [("documents", ApplyDocuments(decision_uri=documents_uri))] if documents_uri else []
        return self.step(*first, ("split", ApplySplit(assignment_uri=assignment_uri, moves_uri=moves_uri)))

    def work(self, name: str) -> str:
        return storage.join(self.layout.work, name)

    @property
    def run_id(self) -> str:
        return f"{self.layout.partition}-{self.layout.build_key}"


CPU = Resources()  # what a unit of publishing work asks of a worker


class Runner(Protocol):
    """Where the pieces of a build run."""

    workers: int  # how many shards can run at once: a small input is cut into at least this many
    gpus: int  # GPUs of the cluster: a scoring step asks for them where there are any

    def decide(self, name: str, fn: Callable, *args) -> Any:
        """fn(*args), once: a decision over all shards."""

    def each_shard(
        self, name: str, fn: Callable, calls: list[tuple], shards: list[str], resources: Resources, items: int | None
    ) -> list:
        """fn(*args) for each args in `calls` (one per shard, named `shards`), results in that order."""

    def report(self, line: dict) -> None:
        """One funnel line, as a step finishes."""

    def log(self, message: str) -> None: ...


def run_shard(step: Step, in_uri: str) -> engine.StepResult:
    return step.run(in_uri)


def split_assignment(plan: Plan, shard_uris: list[str]) -> split.SplitAssignment:
    """Every group's split: the one a published version gave it, or a new stratified draw (tasks/stages/split.py)."""
    published = published_index.PublishedIndex(plan.layout.root, plan.layout.dataset).group_splits()
    return split.assign_splits(shard_uris, plan.recipe.split, plan.work("split-assignment.parquet"), published)


def leakage_guard(
    plan: Plan, shard_uris: list[str], media_uris: list[str], assignment_uri: str, decision: dedupe.DedupeDecision
) -> leakage.Guarded:
    """The leakage guard over the split decision (tasks/publish/leakage.py): the moves it made, and its report."""
    r = plan.recipe
    return leakage.guard_splits(
        plan.layout, shard_uris, StoredMedia(media_uris, plan.layout.root, plan.layout.dataset), assignment_uri,
        r.dedupe, r.split, decision.uri, plan.work("leak-moves.parquet"),
    )  # fmt: skip


def dedupe_decision(plan: Plan, shard_uris: list[str], media_uris: list[str]) -> dedupe.DedupeDecision:
    """The dedupe decision (tasks/stages/dedupe/), against what earlier versions published."""
    published = None
    if plan.recipe.dedupe.against_published:
        published = published_index.snapshot(plan.layout, plan.work("published-items.parquet"))
    groups = frozenset(published_index.PublishedIndex(plan.layout.root, plan.layout.dataset).group_splits())
    media = StoredMedia(media_uris, plan.layout.root, plan.layout.dataset)
    return dedupe.decide_duplicates(
        shard_uris, plan.work("dedupe-decision.parquet"), plan.recipe.dedupe, published, plan.layout.partition, groups,
        media,
    )  # fmt: skip


def semantic_decision(plan: Plan, shard_uris: list[str], name: str = "semantic-decision") -> SemanticDecision:
    """The semantic dedupe decision (tasks/stages/dedupe/semantic.py) over the scored shards' embeddings, and
    the embeddings other partitions published."""
    layout, config = plan.layout, plan.recipe.dedupe
    index = published_index.PublishedIndex(layout.root, layout.dataset)
    published = None
    if config.against_published:
        items = published_index.snapshot(layout, plan.work("published-items.parquet"))
        published = Published(index.embeddings(layout.partition), items)
    embeddings = [plan.embeddings_of(engine.shard_name(uri)) for uri in shard_uris]
    return decide_semantic(
        shard_uris, embeddings, plan.work(f"{name}.parquet"), config, published,
        frozenset(index.group_splits()),
    )  # fmt: skip


def publish_version(plan: Plan, built: publish.Built, extra: dict) -> dict:
    """Commit the version (tasks/publish/commit.py), index it, and point `latest` at it: its manifest."""
    leakage.check_group_splits(plan.layout, [s.index_uri for s in built.staged if s.index_uri])
    manifest = publish.commit_version(plan.layout, plan.recipe.recorded(), built, extra=extra)
    published_index.index_version(plan.layout, manifest)  # the version's groups keep their splits from now on
    publish.point_latest(plan.layout)
    if not plan.recipe.keep_work:
        publish.discard_work(plan.layout)
    return manifest


def plan_line(collected: collect.CollectPlan) -> dict:
    return {
        "stage": "plan",
        "shards": len(collected.shards),
        "in": collected.n_rows,
        "kept": collected.n_rows_kept,
        "rejected": collected.n_rejected,
        "items": collected.n_items,
        "reasons": collected.reasons,
        "texts_dropped": {},
    }


def execute(plan: Plan, runner: Runner, dry_run: bool = False, extra: dict | None = None) -> dict:
    """Build and publish one partition, in the one order there is. A dry run stops after the dedupe
    decision and judges every cleaned item by every rule instead (tasks/build/audit.py): it publishes nothing,
    and a later build of the same recipe and partition reuses its downloads and clean shards."""
    layout, recipe = plan.layout, plan.recipe
    if storage.exists(layout.version_manifest):
        return _already_published(plan, runner)
    sources = _sources(plan, runner)
    if not sources:
        return {
            "version": layout.version,
            "nothing_to_build": f"no source has a drop for partition {layout.partition}",
            "skipped": True,
        }

    collected = runner.decide(
        "plan-collect", collect.plan_collect, sources, layout.partition, plan.run_id, recipe.shards, runner.workers,
        layout.step_dir("plan"),
    )  # fmt: skip
    runner.report(plan_line(collected))
    ingested = _each_step(runner, plan.ingest(), collected.shards, collected.n_items)
    _say_where_media_were_sought(runner, sources, ingested)
    media_uris = [r.media_uri for r in ingested]
    decision = runner.decide("decide-duplicates", dedupe_decision, plan, _uris(ingested), media_uris)
    if dry_run:
        return _dry_run(plan, runner, ingested, decision, [plan_line(collected)])

    steps, semantic = _judged(plan, runner, ingested, decision)
    judged = steps[-1]
    resolved = None
    if any(s.yields_documents for s in sources):
        rejects = [collected.rejects_uri] + [r.rejects_uri for results in steps for r in results]
        resolved = runner.decide(
            "resolve-documents", documents.resolve_documents, _uris(judged), rejects, recipe.filter,
            plan.work("documents-decision.parquet"),
        )  # fmt: skip
    assignment = runner.decide("assign-splits", split_assignment, plan, _uris(judged))
    if assignment.returning:
        runner.log(f"{assignment.returning} of {assignment.groups} groups keep the split a version gave them")
    guard = runner.decide("check-leakage", leakage_guard, plan, _uris(judged), media_uris, assignment.uri, decision)
    for move in guard.report["moved"]:
        runner.log(f"leakage guard moved group {move}")
    split_step = plan.split(assignment.uri, resolved and resolved.uri, guard.moves_uri)
    steps.append(_each_step(runner, split_step, _uris(judged), _kept(judged)))
    staged, members = _publish_media(plan, runner, steps[-1], media_uris)
    built = publish.Built(
        staged,
        [collected.rejects_uri] + [r.rejects_uri for results in steps for r in results],
        [r.dropped_texts_uri for results in steps for r in results],
        [plan_line(collected)] + [line for results in steps for line in engine.summarize(results)],
        withdrawn_uri=decision.withdrawn_uri,
        dedupe_report={**decision.report, "leak_guard": guard.report, **({"semantic": semantic} if semantic else {})},
        align_report=report(recipe.align) if recipe.align.scoring else None, tar_members=members,
        generate_report=generate_report(recipe.generate),
    )  # fmt: skip
    manifest = runner.decide("commit-version", publish_version, plan, built, extra or {})
    for stratum in manifest.get("strata_off_target", []):
        runner.log(f"stratum {stratum} is more than 2 points off its split shares (see the data card)")
    return {"version": layout.version, "manifest": manifest, "funnel": built.funnel, "skipped": False}


def _judged(plan: Plan, runner: Runner, ingested: list, decision: dedupe.DedupeDecision) -> tuple[list, dict | None]:
    """The steps from the dedupe decision to the split decision: refine, score, and semantic dedupe (its
    decision, then its step); with the semantic decision's report."""
    steps = [ingested, _each_step(runner, plan.refine(decision.uri), _uris(ingested), _kept(ingested))]
    if score := plan.score():
        steps.append(_each_step(runner, score, _uris(steps[-1]), _kept(steps[-1])))
    if not plan.recipe.dedupe.semantic.parts():
        return steps, None
    semantic = runner.decide("decide-semantic", semantic_decision, plan, _uris(steps[-1]))
    steps.append(_each_step(runner, plan.semantic(semantic.uri), _uris(steps[-1]), _kept(steps[-1])))
    return steps, semantic.report


def _say_where_media_were_sought(runner: Runner, sources: list, ingested: list[engine.StepResult]) -> None:
    """A line for each source that found under half of its media: where they were looked for, what is there."""
    if not any(r.stages[0].reasons.get("collect:missing_media") for r in ingested):
        return  # the usual build: nothing to count
    columns = ["source", "reason", "source_uri"]
    rejects = [storage.read_parquet(r.rejects_uri, columns=columns).to_pylist() for r in ingested]
    kept = [storage.read_parquet(r.uri, columns=["source"]).column("source").to_pylist() for r in ingested]
    seen = Counter(s for part in kept for s in part) + Counter(x["source"] for part in rejects for x in part)
    missing: dict[str, list[str]] = {}
    for row in (x for part in rejects for x in part if x["reason"] == "collect:missing_media"):
        missing.setdefault(row["source"], []).append(row["source_uri"])
    for source in sources:
        looked_for = missing.get(source.name, [])
        if len(looked_for) * 2 > seen[source.name]:
            runner.log(source.where_media_were_sought(looked_for, len(looked_for), seen[source.name]))


def _already_published(plan: Plan, runner: Runner) -> dict:
    layout = plan.layout
    manifest = publish.check_owner(layout, storage.read_json(layout.version_manifest))
    runner.decide("index-version", published_index.index_version, layout, manifest)  # a crash between the two
    runner.log(f"version {layout.version} is already published; nothing to do")
    return {"version": layout.version, "manifest": manifest, "skipped": True}


def _sources(plan: Plan, runner: Runner) -> list:
    """The recipe's sources with a drop for the partition (the demo corpus made first, where it is asked for)."""
    sources, absent = sources_for_partition(plan.recipe.all_sources, plan.layout.partition)
    for source in absent:
        runner.log(f"source {source.name} has no drop for partition {plan.layout.partition} ({source.uri})")
    for source in sources:
        if source.generated and not storage.exists(source.uri):
            runner.decide("synthesize-demo-corpus", build_demo_corpus, source.uri.rsplit("/", 1)[0])
    return sources


def _publish_media(
    plan: Plan, runner: Runner, split_results: list, media_uris: list[str]
) -> tuple[list[tars.Staged], dict[str, list[str]]]:
    """The version's tars (planned across every shard, then one task each) and kept embeddings, staged; and
    the member suffixes each modality's tars hold."""
    staging = plan.layout.step_dir("publish")
    staged = []
    if plan.embeddings_dir:
        staged += runner.each_shard(
            "stage-embeddings", publish.stage_embeddings,
            [(r.uri, plan.embeddings_of(r.shard), staging) for r in split_results], [r.shard for r in split_results],
            CPU, None,
        )  # fmt: skip
    sources = list(zip(_uris(split_results), media_uris))
    cut = runner.decide("plan-tars", tars.plan_tars, sources, plan.recipe.publish, plan.layout.step_dir("tars"))
    written = runner.each_shard(
        "write-tars", tars.write_tar, [(t, cut.dir, sources, staging) for t in cut.tars],
        [t.name.removesuffix(".tar").replace("/", "-") for t in cut.tars], CPU, _kept(split_results),
    )  # fmt: skip
    return written + staged, cut.members


def _each_step(runner: Runner, step: Step, shard_uris: list[str], items: int | None) -> list[engine.StepResult]:
    """One step over every shard, then the step recorded (its manifest) and its funnel lines reported."""
    results = runner.each_shard(
        step.name, run_shard, [(step, uri) for uri in shard_uris], [engine.shard_name(u) for u in shard_uris],
        step.resources(runner.gpus), items,
    )  # fmt: skip
    for line in engine.commit_step(step.out_dir, results):
        runner.report(line)
    return results


def _uris(results: list[engine.StepResult]) -> list[str]:
    return [r.uri for r in results]


def _kept(results: list[engine.StepResult]) -> int:
    return sum(r.stages[-1].n_kept for r in results)


def _dry_run(plan: Plan, runner: Runner, ingested: list, decision: dedupe.DedupeDecision, funnel: list[dict]) -> dict:
    stages = plan.judging(decision.uri)
    out_dir = plan.layout.step_dir("audit")
    audits = runner.each_shard(
        "audit",
        audit.audit_shard,
        [(r.uri, stages, storage.join(out_dir, f"{r.shard}.json")) for r in ingested],
        [r.shard for r in ingested],
        needs_of(stages, runner.gpus),
        _kept(ingested),
    )
    semantic = {}
    if plan.recipe.dedupe.semantic.parts():  # ranked without align scores (not in clean's shards): near the build's
        found = runner.decide("decide-semantic", semantic_decision, plan, _uris(ingested), "semantic-dry-run")
        semantic = {"semantic": found.report}
    return {
        "version": plan.layout.version,
        "dry_run": audit.summarize(audits),
        "predictions": [a.predictions for a in audits],
        "funnel": funnel + engine.summarize(ingested),
        "dedupe": {**decision.report, **semantic},
        "skipped": False,
    }


class LocalRunner:
    """Every piece in this process, shard after shard: no Prefect, no Ray."""

    def __init__(self, workers: int = 1, on_line: Callable[[dict], None] | None = None):
        self.workers, self.gpus = workers, 0  # stages find this process's own GPU, if any, themselves
        self.on_line = on_line
        self.messages: list[str] = []

    def decide(self, name: str, fn: Callable, *args) -> Any:
        return fn(*args)

    def each_shard(self, name, fn, calls, shards, resources, items) -> list:
        return [fn(*args) for args in calls]

    def report(self, line: dict) -> None:
        if self.on_line:
            self.on_line(line)

    def log(self, message: str) -> None:
        self.messages.append(message)


def build_locally(
    recipe: Recipe, root: str, partition: str, workers: int = 1, dry_run: bool = False
) -> tuple[storage.Layout, dict]:
    """A whole build in this process (see LocalRunner): its layout and result."""
    layout = storage.Layout(root, recipe.name, partition, recipe.fingerprint())
    return layout, execute(Plan(recipe, layout), LocalRunner(workers), dry_run=dry_run)
