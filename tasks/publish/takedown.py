"""Takedowns (`mmetl takedown DATASET --list FILE`): listed items leave every published version, for good.

A list holds one entry a line (`<kind>:<value>`, `#` comments; or a CSV or Parquet file with columns
`kind,value`): `id` (a sample id), `sha256` (the published file's), `phash` (a picture, or a video's keyframe,
within the dedupe radius, so re-encoded copies go too), `chromaprint` (a sound, in the base64 form `fpcalc`
prints, within dedupe's bit error rate), `url` (a source URI, exactly or a prefix ending in `*`), `domain`.

Each version that holds a match gets a new revision, in its own folder: its tars that held a removed item are
written anew without it (under a new name, `<tar>.r<N>.tar`; the others keep their bytes and names), its
indexes, rejects, dropped texts, embeddings, stats, card and Croissant rewritten without any mention of the
removed items (a copy rejected in their favour goes from rejects.parquet too: its `source_uri` is the same
media), and the manifest, written last, names the revision it replaces (kept as `revisions/manifest.r<N-1>.json`)
and the takedown. Then the superseded tars are deleted: readers of the old revision are not broken mid-read
(its files stay until the new manifest is in place), and afterwards one glob sees one revision.

Every step is committed work (the plan first, under `_revision/`), so a takedown killed anywhere and run again
reaches the same revision, and running it twice changes nothing. The dataset's `takedowns.parquet` records what
was removed, when, why and from which versions, with the values that keep it out (id, sha256, pHash, source
URI, the request's own entries): every later build applies it as a blocklist (tasks/stages/blocklist.py). The
published index forgets the removed items (their captions and signatures). What it cannot reach: a copy
someone downloaded before, and the download cache of a build whose work folder was kept (`keep_work`).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from ..core import storage
from ..core.committed import Record, committed
from ..core.schema import DROPPED_TEXT_SCHEMA, EMBEDDING_SCHEMA, REJECT_SCHEMA
from ..published.index import PublishedIndex
from ..stages.blocklist import Blocklist, read_entries
from . import card, croissant
from .commit import counted, split_indexes, write_file

TAKEDOWN_SCHEMA = pa.schema(
    [
        ("takedown", pa.string()),  # the request's id: its entries and reason, hashed
        ("kind", pa.string()),  # what a later build blocks by (a blocklist's kind, or `id`)
        ("value", pa.string()),
        ("reason", pa.string()),
        ("at", pa.string()),
        ("sample_id", pa.string()),  # the item removed (null for the request's own entries)
        ("partitions", pa.list_(pa.string())),  # the versions it was removed from
    ]
)
MATCH_COLUMNS = ["sample_id", "source_uri", "sha256", "phash", "keyframe_phashes", "audio_fingerprint", "tar"]


@dataclass(frozen=True)
class Request:
    entries: tuple[tuple[str, str], ...]
    reason: str

    @property
    def id(self) -> str:
        return hashlib.sha256(json.dumps([sorted(self.entries), self.reason]).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RevisionPlan(Record):
    """What a revision removes from one version: each matched item and the entry it matched, and the tars that
    held them; decided before anything is written, from the revision it replaces."""

    takedown: str
    revision: int
    # sample_id -> the entry it matched, and what keeps it out of later builds: its file's sha256 and pHash,
    # its source URI (kept here, not in the manifest: nothing published may mention it)
    removed: dict[str, dict]
    tars: list[str]  # the superseded tars (names in the version)

    def saved(self) -> dict:
        return {"takedown": self.takedown, "revision": self.revision, "removed": self.removed, "tars": self.tars}

    @classmethod
    def restored(cls, recorded: dict, **_) -> RevisionPlan:
        return cls(**recorded)


def take_down(root: str, dataset: str, list_uri: str, reason: str = "takedown request") -> dict:
    """Remove what the list names from every version of `dataset` under `root`; returns, per partition, the
    revision made and the items removed."""
    request = Request(tuple(read_entries(list_uri)), reason)
    if not request.entries:
        raise ValueError(f"{list_uri} lists nothing to take down")
    return remove(root, dataset, request)


def remove(root: str, dataset: str, request: Request) -> dict:
    """`take_down` of a request already read (reviewers' rejections applied to what is published, too)."""
    manifests = storage.glob(storage.join(root, dataset, "versions", "*", "manifest.json"))
    if not manifests:
        raise FileNotFoundError(f"no published version of {dataset} under {root}")
    versions = [uri.rsplit("/", 1)[0] for uri in manifests]
    plans = {version.rsplit("/", 1)[-1]: revise(version, request) for version in versions}
    _record(root, dataset, request, plans)  # before the plans go: they alone still know the removed items
    _forget(root, dataset, {s for plan in plans.values() if plan for s in plan.removed})
    for version in versions:
        _delete_superseded(version, storage.read_json(storage.join(version, "manifest.json")))
    return {
        "takedown": request.id,
        "versions": {p: {"revision": plan.revision, "removed": len(plan.removed)} for p, plan in plans.items() if plan},
    }


def revise(version: str, request: Request) -> RevisionPlan | None:
    """One version's revision for this request, committed (None where nothing matches, or where it was
    committed and cleaned up before); safe to run again at any point."""
    manifest = storage.read_json(storage.join(version, "manifest.json"))
    staging = storage.join(version, "_revision")
    plan_uri = storage.join(staging, "plan.json")
    if request.id in manifest.get("takedowns", []):  # committed already: its plan, until it is cleaned up
        return RevisionPlan.restored(storage.read_json(plan_uri)) if storage.exists(plan_uri) else None
    plan = plan_revision(version, manifest, request, out_uri=plan_uri)
    if plan.takedown != request.id:
        raise RuntimeError(f"{version}: an earlier takedown ({plan.takedown}) did not finish: run it again first")
    if not plan.removed:
        storage.remove(staging, recursive=True)
        return None
    staged = stage_revision(version, manifest, plan, staging)
    _commit(version, manifest, plan, staged, staging)
    return plan


@committed(lambda out_uri, **_: out_uri, RevisionPlan)
def plan_revision(version: str, manifest: dict, request: Request, out_uri: str) -> RevisionPlan:
    dedupe = manifest["recipe"].get("dedupe") or {}
    radius = 8 if dedupe.get("image_radius") is None else dedupe["image_radius"]
    listed = Blocklist(max_ber=dedupe.get("audio_max_ber") or 0.15)
    for kind, value in request.entries:
        listed.add(kind, value, radius)
    removed, tars = {}, set()
    for split in manifest["splits"].values():
        index = storage.read_parquet(storage.join(version, split["index"]), columns=MATCH_COLUMNS)
        for row in index.to_pylist():
            if found := listed.item(row) or listed.media(row):
                facts = {"sha256": row["sha256"], "phash": row["phash"], "url": row["source_uri"]}
                removed[row["sample_id"]] = {"entry": f"{found.code}: {found.detail}", **facts}
                tars.add(row["tar"])
    return RevisionPlan(request.id, manifest.get("revision", 0) + 1, removed, sorted(tars))


@dataclass(frozen=True)
class StagedRevision(Record):
    """The revision's files, written under `_revision/` with the names they will have, and its counts: recorded
    once all are written, so that files already moved in are never read as the old revision's."""

    files: dict[str, dict]  # every file of the revision: name -> entry
    splits: dict[str, dict]
    samples: int
    rejected: int
    texts_dropped: int

    def saved(self) -> dict:
        return self.__dict__

    @classmethod
    def restored(cls, recorded: dict, **_) -> StagedRevision:
        return cls(**recorded)


@committed(lambda staging, **_: storage.join(staging, "staged.json"), StagedRevision)
def stage_revision(version: str, manifest: dict, plan: RevisionPlan, staging: str) -> StagedRevision:
    """Every file the revision changes, written under `staging` with the name it will have."""
    gone = set(plan.removed)
    files = {}
    renamed = {}
    for name in plan.tars:
        renamed[name] = new = _revised_name(name, plan.revision)
        files[new] = _rewrite_tar(storage.join(version, name), storage.join(staging, new), gone)
    index = _without(_read_all(version, [s["index"] for s in manifest["splits"].values()]), gone)
    index = index.set_column(
        index.schema.get_field_index("tar"),
        "tar",
        pa.array([renamed.get(t, t) for t in index.column("tar").to_pylist()]),
    )
    kept = {n: e for n, e in manifest["files"].items() if n not in plan.tars and not n.endswith("/index.parquet")}
    kept.update(files)
    splits = split_indexes(index, staging, kept)
    rejects = _read_all(version, ["rejects.parquet"], REJECT_SCHEMA)
    mentions = pc.or_(pc.is_in(rejects.column("sample_id"), pa.array(sorted(gone))),
                      pc.is_in(rejects.column("duplicate_of"), pa.array(sorted(gone))))  # fmt: skip
    rejects = rejects.filter(pc.invert(pc.fill_null(mentions, False)))
    dropped = _without(_read_all(version, ["dropped_texts.parquet"], DROPPED_TEXT_SCHEMA), gone)
    for name, table in (("rejects.parquet", rejects), ("dropped_texts.parquet", dropped)):
        kept[name] = write_file(storage.join(staging, name), storage.parquet_bytes(table))
    for name in [n for n in manifest["files"] if n.endswith(".embeddings.parquet")]:
        embedded = _without(_read_all(version, [name], EMBEDDING_SCHEMA), gone)
        kept[name] = write_file(storage.join(staging, name), storage.parquet_bytes(embedded))
    _describe(version, manifest, plan, staging, kept, index, rejects, dropped, splits)
    return StagedRevision(kept, splits, index.num_rows, rejects.num_rows, dropped.num_rows)


def _describe(version, manifest, plan, staging, files, index, rejects, dropped, splits) -> None:
    """stats.json, the data card with its plots, and croissant.json, for the revision."""
    old = storage.read_json(storage.join(version, "stats.json"))
    recorded = card.recorded_from(manifest["recipe"])
    stats = {**old, **counted(index, splits, rejects, dropped, recorded)}
    stats["takedowns"] = old.get("takedowns", []) + [{"takedown": plan.takedown, "removed": len(plan.removed)}]
    files["stats.json"] = write_file(
        storage.join(staging, "stats.json"), json.dumps(stats, indent=2, sort_keys=True).encode()
    )
    about = card.Version(manifest["dataset"], manifest["partition"], recorded, stats, index, rejects,
                         _members(version, manifest, staging, files), files)  # fmt: skip
    for name, data in card.plots(about):
        files[name] = write_file(storage.join(staging, name), data)
    files["README.md"] = write_file(storage.join(staging, "README.md"), card.readme(about))
    files["croissant.json"] = write_file(storage.join(staging, "croissant.json"), croissant.metadata(about))


def _members(version: str, manifest: dict, staging: str, files: dict) -> dict[str, list[str]]:
    """Each modality's tar member suffixes: recorded in the manifest, or read from the tars' headers."""
    if manifest.get("tar_members"):
        return manifest["tar_members"]
    found: dict[str, set[str]] = {}
    for name in sorted(n for n in files if n.endswith(".tar")):
        where = storage.join(staging if storage.exists(storage.join(staging, name)) else version, name)
        modality = name.rsplit("/", 1)[-1].split("-", 1)[0]
        fs, path = storage.filesystem(where)
        with fs.open(path, "rb") as f, tarfile.open(fileobj=f) as tar:  # headers only: members are seeked past
            found.setdefault(modality, set()).update(m.name.split(".", 1)[1] for m in tar.getmembers())
    return {m: sorted(s) for m, s in found.items()}


def _commit(version: str, manifest: dict, plan: RevisionPlan, staged: StagedRevision, staging: str) -> dict:
    """Move the staged files in, keep the replaced manifest, and write the new one, last."""
    for name in staged.files:
        source = storage.join(staging, name)
        if storage.exists(source):  # moved already, before a crash, where it is not
            storage.move(source, storage.join(version, name))
    archived = f"revisions/manifest.r{plan.revision - 1}.json"
    kept = write_file(storage.join(version, archived), json.dumps(manifest, indent=2, sort_keys=True).encode())
    removed_by = {**manifest.get("takedowns_removed", {}), plan.takedown: len(plan.removed)}
    new = {
        **manifest,
        "splits": staged.splits,
        "samples": staged.samples,
        "texts": sum(s["texts"] for s in staged.splits.values()),
        "rejected": staged.rejected,
        "texts_dropped": staged.texts_dropped,
        "files": dict(sorted({**staged.files, archived: kept}.items())),
        "revision": plan.revision,
        "replaces": {"revision": plan.revision - 1, "manifest": archived},
        "takedowns": manifest.get("takedowns", []) + [plan.takedown],
        "takedowns_removed": removed_by,
        "revised_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    storage.write_json(storage.join(version, "manifest.json"), new)  # the commit point
    return new


def _delete_superseded(version: str, manifest: dict) -> None:
    """After the new manifest (and the takedowns record): the tars it no longer names, and the staging folder."""
    for name in storage.list_files(version):
        if name.endswith(".tar") and name not in manifest["files"]:
            storage.remove(storage.join(version, name))
    staging = storage.join(version, "_revision")
    if storage.list_files(staging):
        storage.remove(staging, recursive=True)


def _revised_name(name: str, revision: int) -> str:
    stem = name.removesuffix(".tar").split(".r", 1)[0]
    return f"{stem}.r{revision}.tar"


def _rewrite_tar(source: str, target: str, gone: set[str]) -> dict:
    """The tar without the members of removed items, byte for byte otherwise (written once)."""
    if storage.exists(target):
        data = storage.read_bytes(target)
        return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(storage.read_bytes(source))) as old,
        tarfile.open(fileobj=out, mode="w", format=old.format) as new,
    ):
        for member in old.getmembers():
            if member.name.split(".", 1)[0] not in gone:
                new.addfile(member, old.extractfile(member) if member.isfile() else None)
    return write_file(target, out.getvalue())


def _read_all(version: str, names: list[str], schema: pa.Schema | None = None) -> pa.Table:
    parts = [storage.read_parquet(storage.join(version, n)) for n in names if storage.exists(storage.join(version, n))]
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts, promote_options="default")


def _without(table: pa.Table, gone: set[str]) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table.column("sample_id"), pa.array(sorted(gone), pa.string()))))


def _record(root: str, dataset: str, request: Request, plans: dict[str, RevisionPlan | None]) -> None:
    """The dataset's takedowns.parquet: this request's rows, added once: its own entries, and for each removed
    item the values that keep it out of later builds, with the versions it left."""
    uri = storage.join(root, dataset, "takedowns.parquet")
    rows = storage.read_parquet(uri).to_pylist() if storage.exists(uri) else []
    if any(r["takedown"] == request.id for r in rows):
        return
    at = datetime.now(UTC).isoformat(timespec="seconds")
    where: dict[str, list[str]] = {}
    facts: dict[str, dict] = {}
    for partition, plan in sorted(plans.items()):
        for sample_id, found in (plan.removed if plan else {}).items():
            where.setdefault(sample_id, []).append(partition)
            facts[sample_id] = found
    said = {"takedown": request.id, "reason": request.reason, "at": at}
    new = [{**said, "kind": k, "value": v, "sample_id": None, "partitions": []} for k, v in request.entries]
    for sample_id, found in sorted(facts.items()):
        kept_out = [("id", sample_id), ("sha256", found["sha256"]), ("phash", found["phash"]), ("url", found["url"])]
        new += [{**said, "kind": k, "value": v, "sample_id": sample_id, "partitions": where[sample_id]}
                for k, v in kept_out if v]  # fmt: skip
    storage.write_parquet(uri, pa.Table.from_pylist(rows + new, TAKEDOWN_SCHEMA))


def _forget(root: str, dataset: str, removed: set[str]) -> None:
    """The published index without the removed items: their captions and signatures are gone with them."""
    index = PublishedIndex(root, dataset)
    for part in index.current()["parts"]:
        uri = storage.join(index.folder, part)
        table = storage.read_parquet(uri)
        if removed and pc.any(pc.is_in(table.column("sample_id"), pa.array(sorted(removed)))).as_py():
            storage.write_parquet(uri, _without(table, removed))
