"""Publish: an immutable dataset version that training code loads without mmetl.

    {dataset}/latest          the newest partition's version folder, e.g. `versions/2026-11-28`
    {dataset}/versions/<partition>/
      README.md               the data card: Hugging Face front matter (one config per modality), sources
                              and licenses, the funnel, splits x modality x source, plots (tasks/publish/card.py)
      plots/*.png             the card's plots
      croissant.json          Croissant metadata: the tars, the media in them, the index (tasks/publish/croissant.py)
      train/ val/ test/       {modality}-{n:06d}.tar: WebDataset shards cut by size (tasks/publish/tars.py)
                              index.parquet: one row per item, every Sample column but the bytes, with
                              the `texts` list, plus tar + key
      rejects.parquet         every dropped item of every stage, with its reason
      dropped_texts.parquet   every text removed from an item that stayed, with its reason
      withdrawn.parquet       items of newer partitions this (older, backfilled) one withdraws
      stats.json              counts per split and modality, shares per stratum, hours, the funnel
      manifest.json           written last: the version exists once it does

Tars are staged in the build's work folder and moved into the version only by `commit_version`, which
refuses a version that another build already owns: a published version is never touched again. The
manifest lists every file with its size and sha256 (tars with their item counts).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from ..core import storage
from ..core.code import stage_code_digest
from ..core.committed import committed
from ..core.redact import redact_columns
from ..core.schema import DROPPED_TEXT_SCHEMA, EMBEDDING_SCHEMA, REJECT_SCHEMA, SPLITS, table_of
from ..core.shards import shard_name
from ..media.kinds import KINDS
from ..published.index import WITHDRAWN_SCHEMA
from ..stages.split import shares_by_stratum
from . import card, croissant
from .tars import Staged


@committed(
    lambda items_uri, staging_dir, **_: storage.join(staging_dir, f"{shard_name(items_uri)}.embeddings.json"), Staged
)
def stage_embeddings(items_uri: str, embeddings_uri: str, staging_dir: str) -> Staged:
    """The published items' embeddings, with only the texts they kept, staged per split as
    `<split>/<shard>.embeddings.parquet`."""
    shard = shard_name(items_uri)
    items = {
        row["sample_id"]: row
        for row in storage.read_parquet(items_uri, columns=["sample_id", "split", "texts"]).to_pylist()
    }
    rows: dict[str, list[dict]] = {}
    for row in storage.read_parquet(embeddings_uri).to_pylist():
        item = items.get(row["sample_id"])
        if item is None:  # rejected after scoring
            continue
        kept = {t["text"] for t in item["texts"]}
        texts = [t for t in row["texts"] or [] if t["text"] in kept]
        rows.setdefault(item["split"], []).append({**row, "texts": texts})
    files = {}
    for split, part in sorted(rows.items()):
        name = f"{split}/{shard}.embeddings.parquet"
        table = table_of(part, EMBEDDING_SCHEMA)
        files[name] = write_file(storage.join(staging_dir, name), storage.parquet_bytes(table))
    return Staged(staging_dir, files)


@dataclass(frozen=True)
class Built:
    """What a build hands its commit: what `tars.write_tar` (and `stage_embeddings`) staged, every step's
    rejects and dropped texts, the funnel, the decisions' reports, and the member suffixes of each
    modality's tars (tars.plan_tars)."""

    staged: list[Staged]
    reject_uris: list[str]
    dropped_text_uris: list[str]
    funnel: list[dict]
    withdrawn_uri: str | None = None  # the published items this version withdraws (tasks/published/index.py)
    dedupe_report: dict | None = None
    align_report: dict | None = None  # models and thresholds that decided
    generate_report: dict | None = None  # models that wrote texts (transcripts)
    tar_members: dict[str, list[str]] = field(default_factory=dict)


def commit_version(layout: storage.Layout, recipe: card.Recorded, built: Built, extra: dict | None = None) -> dict:
    """Move the staged tars in; write the indexes, rejects, stats, data card and Croissant metadata; and
    commit with the manifest, last.

    Safe to rerun after a crash at any point: a tar already moved is not moved again.
    """
    if storage.exists(layout.version_manifest):
        return check_owner(layout, storage.read_json(layout.version_manifest))
    check_funnel(built.funnel)
    claim_version(layout)
    version = layout.version
    files = _move_staged(built.staged, version)
    indexes = [storage.read_parquet(p.index_uri) for p in built.staged if p.index_uri]
    index = pa.concat_tables(indexes) if indexes else None
    splits = split_indexes(index, version, files)
    rejects = _gather(built.reject_uris, REJECT_SCHEMA).sort_by([("stage", "ascending"), ("sample_id", "ascending")])
    rejects = redact_columns(rejects, texts=("detail", "group_id"))
    files["rejects.parquet"] = write_file(storage.join(version, "rejects.parquet"), storage.parquet_bytes(rejects))
    dropped = _gather(built.dropped_text_uris, DROPPED_TEXT_SCHEMA).sort_by(
        [("stage", "ascending"), ("sample_id", "ascending"), ("reason", "ascending"), ("text", "ascending")]
    )
    # and what this version withdraws from partitions built before it though newer (tasks/published/index.py)
    withdrawn = storage.read_parquet(built.withdrawn_uri) if built.withdrawn_uri else WITHDRAWN_SCHEMA.empty_table()
    for name, table in (("dropped_texts.parquet", dropped), ("withdrawn.parquet", withdrawn)):
        files[name] = write_file(storage.join(version, name), storage.parquet_bytes(table))

    stats = _stats(index, splits, rejects, dropped, recipe, built)
    files["stats.json"] = write_file(
        storage.join(version, "stats.json"), json.dumps(stats, indent=2, sort_keys=True).encode()
    )
    about = card.Version(layout.dataset, layout.partition, recipe, stats, index, rejects, built.tar_members, files)
    for name, data in card.plots(about):
        files[name] = write_file(storage.join(version, name), data)
    files["README.md"] = write_file(storage.join(version, "README.md"), card.readme(about))  # lists the plots
    files["croissant.json"] = write_file(storage.join(version, "croissant.json"), croissant.metadata(about))
    manifest = {
        "dataset": layout.dataset,
        "partition": layout.partition,
        "build_key": layout.build_key,
        "recipe": recipe.written,
        "splits": splits,
        "samples": sum(s["samples"] for s in splits.values()),
        "texts": sum(s["texts"] for s in splits.values()),
        "rejected": rejects.num_rows,
        "texts_dropped": dropped.num_rows,
        "withdrawn": withdrawn.num_rows,
        "strata_off_target": stats["strata_off_target"],
        "files": dict(sorted(files.items())),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "format": "webdataset+parquet/v3",
        "code": code_identity(),  # with `recipe`: what it takes to build this version again
        "tar_members": built.tar_members,  # each modality's member suffixes (a takedown's revision reuses them)
        **({"align": built.align_report} if built.align_report else {}),
        **({"generate": built.generate_report} if built.generate_report else {}),
        **(extra or {}),
    }
    storage.write_json(layout.version_manifest, manifest)  # the commit point, last
    return manifest


def _move_staged(staged: list[Staged], version: str) -> dict[str, dict]:
    """The staged tars moved into the version (one moved before a crash is not moved again): name -> entry."""
    files = {}
    for p in staged:
        for name, entry in p.files.items():
            moved = storage.join(p.staging_dir, name)
            if storage.exists(moved):
                storage.move(moved, storage.join(version, name))
            files[name] = entry
    return files


def split_indexes(index: pa.Table | None, version: str, files: dict[str, dict]) -> dict[str, dict]:
    """Each split's `index.parquet` written (and added to `files`), and what the manifest says of the split."""
    splits = {}
    for split in SPLITS:
        part = index.filter(pc.equal(index.column("split"), split)).sort_by("sample_id") if index is not None else None
        if part is None or part.num_rows == 0:
            continue
        name = f"{split}/index.parquet"
        files[name] = write_file(storage.join(version, name), storage.parquet_bytes(part))
        tars = sorted(f for f in files if f.startswith(f"{split}/") and f.endswith(".tar"))
        splits[split] = {
            "samples": part.num_rows,
            "texts": int(pc.sum(pc.list_value_length(part.column("texts"))).as_py()),
            "groups": pc.count_distinct(part.column("group_id")).as_py(),
            "modalities": _count(part.column("modality").to_pylist()),
            "media_bytes": int(pc.sum(part.column("media_size")).as_py()),
            "tar_bytes": sum(files[t]["bytes"] for t in tars),
            "tars": tars,
            "index": name,
        }
    return splits


def _stats(index, splits: dict, rejects: pa.Table, dropped: pa.Table, recipe: card.Recorded, built: Built) -> dict:
    """The version's stats.json."""
    return {
        **counted(index, splits, rejects, dropped, recipe),
        "funnel": built.funnel,
        "dedupe": built.dedupe_report or {},
        **({"align": built.align_report} if built.align_report else {}),  # models and thresholds that decided
        **({"generate": built.generate_report} if built.generate_report else {}),
    }


def counted(index, splits: dict, rejects: pa.Table, dropped: pa.Table, recipe: card.Recorded) -> dict:
    """What stats.json counts of the published items, rejects and dropped texts (a takedown's revision counts
    them again)."""
    rows = index.select(["modality", "source", "split"]).to_pylist() if index is not None else []
    strata = shares_by_stratum(rows, recipe.split)
    return {
        "splits": splits,
        "strata": strata,
        "strata_off_target": sorted(name for name, s in strata.items() if s["flagged"]),
        "rejects_by_reason": _count(rejects.column("reason").to_pylist()),
        "texts_dropped_by_reason": _count(dropped.column("reason").to_pylist()),
        "hours": _hours(index),
        "text_languages": _languages(index),
        "text_kinds": _count(pc.struct_field(pc.list_flatten(index.column("texts")), "kind").to_pylist())
        if index is not None
        else {},
        **{k: v for kind in KINDS.values() if index is not None for k, v in kind.stats(index).items()},
        **fetch_failures(rejects),
        "reviews": _reviews(index, rejects),
    }


def _reviews(index, rejects: pa.Table) -> dict:
    """Reviewers' overrides (tasks/stages/rules.py): items kept against a rule, and items they rejected."""
    features = index.column("features").to_pylist() if index is not None else []
    kept = sum(1 for f in features if f and '"review"' in f)
    rejected = sum(1 for r in rejects.column("reason").to_pylist() if r == "review:rejected")
    return {"kept_against_rule": kept, "rejected": rejected}


def point_latest(layout: storage.Layout) -> None:
    """`<dataset>/latest` names the newest partition's version (a backfill of an older one leaves it);
    written after the manifest, so it never names a version that is not whole."""
    current = storage.read_bytes(layout.latest).decode().strip() if storage.exists(layout.latest) else ""
    mine = f"versions/{layout.partition}"
    if current.removeprefix("versions/") <= layout.partition and current != mine:
        storage.write_bytes(layout.latest, f"{mine}\n".encode())


def code_identity() -> dict:
    """The mmetl release and the digest of the stage code (tasks/) that wrote a version."""
    try:
        release = importlib.metadata.version("mmetl")
    except importlib.metadata.PackageNotFoundError:
        release = None
    return {"mmetl": release, "stage_code_sha256": stage_code_digest()}


def discard_work(layout: storage.Layout) -> None:
    """After the manifest: the work folder (a copy of the media, the shards) is no longer needed;
    a rerun learns from the manifest that the version exists."""
    storage.remove(layout.work, recursive=True)
    partition_dir = layout.work.rsplit("/", 1)[0]
    if not storage.list_files(partition_dir):  # no other build's work left beside it
        storage.remove(partition_dir, recursive=True)


def _gather(uris: list[str], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables([storage.read_parquet(u).cast(schema) for u in uris]) if uris else schema.empty_table()


def claim_version(layout: storage.Layout) -> None:
    """Take the partition's version for this build, atomically; rerunning the same build may resume."""
    if storage.create_exclusive(layout.version_claim, json.dumps({"build_key": layout.build_key}).encode()):
        leftovers = [f for f in storage.list_files(layout.version) if f != "_claim.json"]
        if leftovers:  # an abandoned build's files: publishing beside them would mix two builds
            storage.remove(layout.version_claim)
            raise VersionExists(
                f"{layout.version} holds files of an abandoned build ({leftovers[0]}, ...);"
                " delete the whole folder to publish this partition again"
            )
        return
    owner = storage.read_json(layout.version_claim)["build_key"]
    if owner != layout.build_key:
        raise VersionExists(
            f"{layout.version} is being published by build {owner} (this is build {layout.build_key}: another"
            " recipe or code version). Publish under a new partition name, or, if that build was abandoned"
            f" before it committed, delete the whole folder {layout.version}"
        )


def check_owner(layout: storage.Layout, manifest: dict) -> dict:
    if manifest["build_key"] != layout.build_key:
        raise VersionExists(
            f"{layout.version} was already published by build {manifest['build_key']} (this is build"
            f" {layout.build_key}: another recipe or mmetl version); versions are immutable:"
            " publish under a new partition name"
        )
    return manifest


class VersionExists(RuntimeError):
    """The partition's version was published by another build."""


def write_file(uri: str, data: bytes) -> dict:
    """Write a version's file: its manifest entry (bytes, sha256)."""
    storage.write_bytes(uri, data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def check_funnel(funnel: list[dict]) -> None:
    """in = kept + rejected for every stage, and each stage takes in exactly what the one before kept
    (the plan keeps annotation rows and hands on the items they form)."""
    previous = None
    for step in funnel:
        if step["in"] != step["kept"] + step["rejected"]:
            raise RuntimeError(f"{step['stage']}: in={step['in']} != kept={step['kept']} + rejected={step['rejected']}")
        handed_on = previous and previous.get("items", previous["kept"])
        if previous is not None and step["in"] != handed_on:
            raise RuntimeError(
                f"{step['stage']} took in {step['in']} items but {previous['stage']} handed on {handed_on}"
            )
        previous = step


def fetch_failures(rejects: pa.Table, top: int = 10) -> dict:
    """Download failures by source and category, and the hosts that failed most (where to look first)."""
    by_source: dict[str, Counter] = defaultdict(Counter)
    hosts: Counter = Counter()
    for row in rejects.select(["source", "reason", "source_uri"]).to_pylist():
        if row["reason"].startswith("fetch:"):
            by_source[row["source"]][row["reason"]] += 1
            hosts[urlsplit(row["source_uri"] or "").hostname or "?"] += 1
    return {
        "fetch_failures_by_source": {s: dict(sorted(c.items())) for s, c in sorted(by_source.items())},
        "top_failing_hosts": [[h, n] for h, n in hosts.most_common(top)],
    }


def _count(values: list[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def _languages(index: pa.Table | None, sure: float = 0.5) -> dict[str, int]:
    """Published texts per language; `und` where the identifier was less than `sure` of it."""
    if index is None or index.num_rows == 0:
        return {}
    texts = pc.list_flatten(index.column("texts"))
    langs = pc.if_else(
        pc.greater_equal(pc.fill_null(pc.struct_field(texts, "lang_score"), 0), sure),
        pc.struct_field(texts, "lang"),
        "und",
    )
    return _count(pc.fill_null(langs, "und").to_pylist())


def _hours(index: pa.Table | None) -> dict[str, float]:
    hours: dict[str, float] = defaultdict(float)
    if index is not None:
        for modality, seconds in zip(index.column("modality").to_pylist(), index.column("duration_s").to_pylist()):
            if seconds:
                hours[modality] += seconds / 3600
    return {k: round(v, 6) for k, v in sorted(hours.items())}
