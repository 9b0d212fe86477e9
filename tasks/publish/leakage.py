"""The leakage guard, between the split decision and the tars: no val or test item may be a copy of a
train item of this version or of an earlier one.

It does not trust dedupe to have seen every copy. Its own search is wider (`split.guard`: a larger
pHash radius, a higher Chromaprint bit error rate, a looser short-sound print; each at least as wide as
dedupe's), and its sound candidates are verified on the waveform as dedupe's are, so a copy that
dedupe's thresholds let through still shows, and two distinct sounds that look alike do not.

A copy across splits fails the build, naming the pairs (`split.on_leak: fail`), or (`move`) the new
group goes into its copy's split: groups joined by copies end in one split, the one a published group
among them holds, else train when one of them is in train. A published group never moves; a leak that
only moving one would mend still fails. The moves are written beside the assignment and applied by the
split stage; the report goes into the version's stats.json.

Just before the commit, `check_group_splits` makes sure no group is published in another split than a
version already gave it (another partition's build may have committed it meanwhile).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..core import storage
from ..core.committed import Record, committed
from ..core.groups import UnionFind
from ..core.stored_media import StoredMedia
from ..media.kinds import SIGNATURE_COLUMNS
from ..published.index import PublishedIndex
from ..similar.signatures import Signatures
from ..stages.dedupe import DedupeConfig, find_pairs, read_verified, withdrawn_uri
from ..stages.split import LeakGuardConfig, SplitConfig

COLUMNS = ["sample_id", "modality", "sha256", *SIGNATURE_COLUMNS]
MOVES_SCHEMA = pa.schema([("group_id", pa.string()), ("split", pa.string()), ("was", pa.string())])
SHOWN = 5  # pairs named in an error
LISTED = 50  # moves listed in the report


class Leakage(RuntimeError):
    """A val or test item is a copy of a train item, or a group is in another split than published."""


UNVERIFIED = ("image_radius", "video_radius")  # signals whose pairs are not checked on the media behind them
LOWER_IS_WIDER = ("audio_min_landmarks",)  # thresholds on how much two items share, not how far apart


def search_config(dedupe: DedupeConfig, guard: LeakGuardConfig) -> DedupeConfig:
    """Dedupe's signals, each at the wider of the guard's threshold and dedupe's. A picture signal that the
    recipe turned off stays off (generated shapes share hashes without being copies, and nothing checks
    the pixels behind a pHash); sounds are searched whatever dedupe's setting, their pairs verified."""

    def wider(name, ours, theirs):
        if ours is None:
            return None if name in UNVERIFIED else theirs
        return min(ours, theirs) if name in LOWER_IS_WIDER else max(ours, theirs)

    return dedupe.model_copy(
        update={name: wider(name, getattr(dedupe, name), value) for name, value in guard.model_dump().items()}
    )


@dataclass(frozen=True)
class Guarded(Record):
    """The groups the guard moved (MOVES_SCHEMA rows, none unless `split.on_leak: move`) and its report."""

    moves_uri: str
    report: dict

    def saved(self) -> dict:
        return self.report

    @classmethod
    def restored(cls, recorded: dict, out_uri: str, **_) -> Guarded:
        return cls(out_uri, recorded)


@committed(lambda out_uri, **_: out_uri.removesuffix(".parquet") + ".json", Guarded)
def guard_splits(
    layout: storage.Layout,
    shard_uris: list[str],
    media: StoredMedia,
    assignment_uri: str,
    dedupe: DedupeConfig,
    split: SplitConfig,
    decision_uri: str,
    out_uri: str,
) -> Guarded:
    """Search this build's items (`shard_uris`, split as `assignment_uri` says) and the other partitions'
    published ones for copies across splits. Writes the moves (none unless `split.on_leak: move`) to
    `out_uri`; raises Leakage for a leak it may not mend."""
    items = Signatures(*_ours(shard_uris, assignment_uri), _published(layout, withdrawn_uri(decision_uri)))
    known = read_verified(decision_uri)  # the pairs dedupe verified already
    evidence, verification, _ = find_pairs(items, search_config(dedupe, split.guard), media.get, known)
    # pairs of two published items are not this build's to judge: their versions stand as they are
    evidence = {pair: why for pair, why in evidence.items() if "/" not in pair[0] or "/" not in pair[1]}
    rows = items.rows({x for pair in evidence for x in pair}, ["split", "group_id", "fixed"])
    leaks = _crossing(evidence, rows)
    moves = _moves(evidence, rows) if leaks and split.on_leak == "move" else {}
    moved_rows = {k: {**r, "split": moves.get(r["group_id"], (r["split"],))[0]} for k, r in rows.items()}
    left = _crossing(evidence, moved_rows)
    if left:
        raise Leakage(
            f"{len(left)} val/test items are copies of train items: "
            + "; ".join(left[:SHOWN])
            + (" ..." if len(left) > SHOWN else "")
            + (
                ". Their groups were published in those splits, so they cannot move"
                if split.on_leak == "move"
                else ". Dedupe did not merge them: check dedupe.against_published and its thresholds, or set"
                " split.on_leak: move to put a new group into its copy's split"
            )
        )
    report = {
        "items_checked": len(items),
        "pairs_found": len(evidence),
        "leaks": len(leaks),
        "moved_groups": len(moves),
        "moved": [f"{g}: {was} -> {to} ({why})" for g, (to, was, why) in sorted(moves.items())][:LISTED],
        "verification": verification,
    }
    moves_table = pa.table(
        {
            "group_id": list(moves),
            "split": [to for to, _, _ in moves.values()],
            "was": [was for _, was, _ in moves.values()],
        },
        schema=MOVES_SCHEMA,
    )
    storage.write_parquet(out_uri, moves_table)
    return Guarded(out_uri, report)


def _ours(shard_uris: list[str], assignment_uri: str) -> list[pa.Table]:
    """This build's items (keyed by sample_id), each with its group's split and whether a version fixed it."""
    assignment = storage.read_parquet(assignment_uri, columns=["group_id", "split", "published"])
    tables = []
    for uri in shard_uris:
        table = storage.read_parquet(uri, columns=COLUMNS + ["group_id"])
        at = pc.index_in(table.column("group_id"), assignment.column("group_id"))
        table = table.append_column("split", assignment.column("split").take(at))
        table = table.append_column("fixed", assignment.column("published").take(at))
        tables.append(table.append_column("key", table.column("sample_id")))
    return tables


def _published(layout: storage.Layout, withdrawn_uri: str) -> pa.Table:
    """The other partitions' published items still standing (what this build withdraws is not), keyed
    partition/sample_id; a published item's split is fixed."""
    published = PublishedIndex(layout.root, layout.dataset).items(except_partition=layout.partition)
    published = published.select(COLUMNS + ["group_id", "split", "partition"]).append_column("key", _keys(published))
    if storage.exists(withdrawn_uri):
        gone = _keys(storage.read_parquet(withdrawn_uri))
        published = published.filter(pc.invert(pc.is_in(published.column("key"), gone)))
    published = published.append_column("fixed", pa.repeat(pa.scalar(True), published.num_rows))
    return published.filter(pc.is_valid(published.column("split")))  # versions before splits were recorded


def _keys(table: pa.Table):
    """partition/sample_id: an id is unique within a partition only."""
    return pc.binary_join_element_wise(table.column("partition"), table.column("sample_id"), "/")


def _crossing(evidence: dict, rows: dict[str, dict]) -> list[str]:
    """The pairs with one item in train and the other in val or test, described."""
    found = []
    for (a, b), (reason, measured) in sorted(evidence.items()):
        x, y = rows[a]["split"], rows[b]["split"]
        if "train" in {x, y} and x != y:
            found.append(f"{a} ({x}) ~ {b} ({y}): {reason}, {measured}")
    return found


def _moves(evidence: dict, rows: dict[str, dict]) -> dict[str, tuple[str, str, str]]:
    """group -> (new split, old split, why) for the new groups that must join their copies' split."""
    groups = UnionFind()
    fixed, split_of, copy_of = {}, {}, {}
    for (a, b), _ in sorted(evidence.items()):
        ga, gb = rows[a]["group_id"], rows[b]["group_id"]
        for key, group in ((a, ga), (b, gb)):
            split_of[group] = rows[key]["split"]
            if rows[key]["fixed"]:
                fixed[group] = rows[key]["split"]
        copy_of.setdefault(ga, b)
        copy_of.setdefault(gb, a)
        groups.union(ga, gb)
    members: dict[str, list[str]] = {}
    for group in split_of:
        members.setdefault(groups.find(group), []).append(group)
    moves = {}
    for joined in members.values():
        held = {fixed[g] for g in joined if g in fixed}
        if len(held) > 1:
            continue  # published in two splits: nothing to mend by moving, the leak stays and fails
        splits = {split_of[g] for g in joined}
        target = held.pop() if held else ("train" if "train" in splits else min(splits))
        for group in sorted(joined):
            if split_of[group] != target and group not in fixed:
                moves[group] = (target, split_of[group], f"a copy of {copy_of[group]}")
    return moves


def check_group_splits(layout: storage.Layout, index_uris: list[str]) -> None:
    """No group in another split than a version published it in: a build of another partition that
    committed after this one drew its splits (two builds at once) may have published a group new to both."""
    published = PublishedIndex(layout.root, layout.dataset).group_splits()
    ours = [storage.read_parquet(u, columns=["group_id", "split"]) for u in index_uris]
    moved = sorted(
        {(g, s, published[g]) for t in ours for g, s in zip(t["group_id"].to_pylist(), t["split"].to_pylist())
         if published.get(g, s) != s}
    )  # fmt: skip
    if moved:
        shown = "; ".join(f"{g}: {s} here, {p} as published" for g, s, p in moved[:SHOWN])
        raise Leakage(
            f"{len(moved)} groups would be published in another split than a version already gave them ({shown})."
            " Another partition's build committed them while this one ran: delete this build's work folder"
            f" ({layout.work}) and build the partition again to draw its splits afresh"
        )
