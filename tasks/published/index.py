"""The index of everything a dataset has published: so that a new partition publishes nothing that an
earlier one already holds (`dedupe: {against_published: true}`), and so that a group keeps the split a
version published it in (`group_splits`, read by the split decision: tasks/stages/split.py). Each item keeps
its signatures, group, split and caption-kind texts (caption dedupe compares them across versions).

    {root}/{dataset}/dedupe-index/parts/{partition}-{build_key}.parquet   a version's items
    {root}/{dataset}/dedupe-index/gen-000007.json                         the parts, as of generation 7

A version is added by writing its part, then creating the next generation file with a conditional
create (the commit): a crash in between leaves the previous generation whole (the orphan part is
ignored, and rewritten by the rerun), and two builds appending at once cannot both take a number.

Order of building does not change the result. An item belongs to the earliest partition that holds
it: a copy of an item published by an earlier partition is rejected (`duplicate:published`); when a
backfill builds an older partition after newer ones, its items stay and the newer copies are listed
as withdrawn by them (the version's `withdrawn.parquet`, and in the index), so the union of all
versions minus what is withdrawn is the same in every order.
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.compute as pc

from ..core import storage
from ..core.schema import CAPTION_KINDS, SAMPLE_SCHEMA, table_of
from ..media.kinds import SIGNATURE_COLUMNS

ITEM_SCHEMA = pa.schema(
    [(name, pa.string()) for name in ["sample_id", "partition", "modality", "sha256", "group_id", "split"]]
    + [SAMPLE_SCHEMA.field(name) for name in SIGNATURE_COLUMNS]  # what each media kind's dedupe compares
    + [("captions", pa.list_(pa.string()))]  # the texts caption dedupe compares (tasks/stages/dedupe/)
    + [("withdrawn_by", pa.string())]
)
ITEM_COLUMNS = ITEM_SCHEMA.names[:-1]  # what a published item contributes: its identity and signatures
WITHDRAWN_SCHEMA = pa.schema([("sample_id", pa.string()), ("partition", pa.string()), ("withdrawn_by", pa.string())])
GENERATION = re.compile(r"gen-(\d{6})\.json$")


class PublishedIndex:
    def __init__(self, root: str, dataset: str):
        self.folder = storage.join(root, dataset, "dedupe-index")
        self.versions = storage.join(root, dataset, "versions")

    def current(self) -> dict:
        generations = sorted(uri for uri in storage.list_files(self.folder) if GENERATION.search(uri))
        if not generations:
            return {"generation": 0, "parts": []}
        return storage.read_json(storage.join(self.folder, generations[-1].rsplit("/", 1)[-1]))

    def all_items(self) -> pa.Table:
        parts = [_conform(storage.read_parquet(storage.join(self.folder, p))) for p in self.current()["parts"]]
        return pa.concat_tables(parts) if parts else ITEM_SCHEMA.empty_table()

    def group_splits(self) -> dict[str, str]:
        """The split each published group is in, for good (tasks/stages/split.py): where its earliest
        partition published it, withdrawn items included (their versions still hold them)."""
        table = self.all_items()
        table = (
            table.filter(pc.is_valid(table.column("split")))
            .select(["group_id", "split", "partition"])
            .sort_by([("partition", "descending")])
        )
        return dict(zip(table.column("group_id").to_pylist(), table.column("split").to_pylist()))

    def items(self, except_partition: str) -> pa.Table:
        """Every published item of the other partitions that no backfill has withdrawn."""
        table = self.all_items()
        if table.num_rows == 0:
            return table
        # one file in two partitions has one sample_id: an item is (partition, sample_id)
        keys = pc.binary_join_element_wise(table.column("partition"), table.column("sample_id"), "/")
        withdrawn = keys.filter(pc.is_valid(table.column("withdrawn_by")))
        keep = pc.and_(
            pc.and_(
                pc.is_null(table.column("withdrawn_by")), pc.not_equal(table.column("partition"), except_partition)
            ),
            pc.invert(pc.is_in(keys, withdrawn)),
        )
        return table.filter(keep)

    def embeddings(self, except_partition: str) -> list[tuple[str, list[str]]]:
        """(partition, its published `*.embeddings.parquet`) of each other partition that published embeddings
        (`align.keep_embeddings`, `dedupe.semantic`): what semantic dedupe compares with, a partition at a time."""
        found = []
        for part in self.current()["parts"]:
            partition = part.removeprefix("parts/").removesuffix(".parquet").rsplit("-", 1)[0]
            if partition == except_partition:
                continue
            version = storage.join(self.versions, partition)
            files = storage.read_json(storage.join(version, "manifest.json"))["files"]
            named = [storage.join(version, f) for f in files if f.endswith(".embeddings.parquet")]
            if named:
                found.append((partition, named))
        return found

    def add(self, key: str, items: pa.Table, withdrawn: pa.Table) -> None:
        """Add one version (its items and what it withdraws) unless the index already lists it."""
        part = f"parts/{key}.parquet"
        if part in self.current()["parts"]:
            return
        rows = table_of(items.select(ITEM_COLUMNS).to_pylist() + withdrawn.to_pylist(), ITEM_SCHEMA)
        storage.write_parquet(storage.join(self.folder, part), rows)
        while True:  # the commit: the next generation, created by exactly one writer
            current = self.current()
            if part in current["parts"]:
                return
            generation = {"generation": current["generation"] + 1, "parts": current["parts"] + [part]}
            name = f"gen-{generation['generation']:06d}.json"
            if storage.create_exclusive(storage.join(self.folder, name), json.dumps(generation).encode()):
                return


def _conform(part: pa.Table) -> pa.Table:
    """A part in today's schema: signatures an older mmetl did not record are null (never matched)."""
    columns = [part.column(f.name) if f.name in part.column_names else pa.nulls(len(part), f.type) for f in ITEM_SCHEMA]
    return pa.Table.from_arrays(columns, schema=ITEM_SCHEMA)


def with_captions(index: pa.Table) -> pa.Table:
    """The index's items with `captions` (their caption-kind texts) instead of all their texts."""
    captions = [[t["text"] for t in texts or [] if t["kind"] in CAPTION_KINDS] for texts in index["texts"].to_pylist()]
    index = index.drop_columns(["texts"])
    return index.append_column(ITEM_SCHEMA.field("captions"), pa.array(captions, pa.list_(pa.string())))


def index_version(layout: storage.Layout, manifest: dict) -> None:
    """Add a committed version to its dataset's index (again after a crash: it is a no-op once in)."""
    columns = [c for c in ITEM_COLUMNS if c != "captions"] + ["texts"]
    splits = [
        with_captions(storage.read_parquet(storage.join(layout.version, s["index"]), columns=columns))
        for s in manifest["splits"].values()
    ]
    items = pa.concat_tables(splits) if splits else ITEM_SCHEMA.empty_table().select(ITEM_COLUMNS)
    withdrawn_uri = storage.join(layout.version, "withdrawn.parquet")
    withdrawn = (
        storage.read_parquet(withdrawn_uri)
        if "withdrawn.parquet" in manifest["files"]
        else WITHDRAWN_SCHEMA.empty_table()
    )
    PublishedIndex(layout.root, layout.dataset).add(f"{layout.partition}-{layout.build_key}", items, withdrawn)


def snapshot(layout: storage.Layout, out_uri: str) -> str | None:
    """The other partitions' published items, written once for the dedupe decision; None when there are none."""
    if not storage.exists(out_uri):
        items = PublishedIndex(layout.root, layout.dataset).items(except_partition=layout.partition)
        if items.num_rows == 0:
            return None
        storage.write_parquet(out_uri, items)
    return out_uri
