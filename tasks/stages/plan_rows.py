"""The plan's rows as Arrow columns: how `collect.plan_collect` gathers 10M annotation rows into items
without a Python dict per item.

`RowLog` keeps every usable row in reading order, a batch of `_BATCH` rows at a time as Arrow;
`gather_items` sorts them by item and reading order and makes one item per run of rows (the first row
gives the media, later rows add texts and row numbers); `as_samples` turns a slice of items into the
Sample table of one work shard.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.groups import UnionFind
from ..core.schema import SAMPLE_SCHEMA, SEGMENT, TEXT, make_sample_id
from ..media.kinds import KINDS
from ..sources import Row

_BATCH = 100_000  # rows turned into one Arrow batch while reading
SOURCE_TEXT = pa.struct([("text", pa.string()), ("kind", pa.string())])  # a text as a source gives it
LOG_SCHEMA = pa.schema(
    [
        ("ordinal", pa.int64()),  # place in reading order, over all sources
        ("number", pa.int64()),  # the row's number in its annotation file
        ("source", pa.string()),
        ("key", pa.string()),
        ("sample_id", pa.string()),
        ("modality", pa.string()),
        ("texts", pa.list_(SOURCE_TEXT)),
        ("source_uri", pa.string()),
        ("clip_start_s", pa.float64()),
        ("clip_end_s", pa.float64()),
        ("region", pa.list_(pa.int32())),
        ("segments", pa.list_(SEGMENT)),
        ("meta", pa.string()),
        ("part_of", pa.string()),  # the document's sample_id
        ("group", pa.string()),  # the group the row names, as a label
    ]
)
_FIRST_ROW = ["sample_id", "source", "key", "modality", "source_uri", "clip_start_s", "clip_end_s", "region"]
_FIRST_ROW += ["segments", "meta"]


class RowLog:
    """Every usable row of the sources, in reading order; `n_read` counts the unusable ones too."""

    def __init__(self) -> None:
        self.n_read = 0
        self.batches: list[pa.RecordBatch] = []
        self.columns: dict[str, list] = {name: [] for name in LOG_SCHEMA.names}

    def skip(self) -> None:
        self.n_read += 1

    def add(self, source: str, row: Row, segments: list[dict] | None, meta: str | None) -> None:
        clip = row.clip or (None, None)
        values = (
            self.n_read,
            row.number,
            source,
            row.key,
            make_sample_id(source, row.key),
            row.modality,
            row.texts,
            row.media,
            clip[0],
            clip[1],
            list(row.region) if row.region else None,
            segments,
            meta,
            make_sample_id(source, row.part_of) if row.part_of is not None else None,
            f"{source}:{row.group}" if row.group is not None else None,
        )
        for column, value in zip(self.columns.values(), values):
            column.append(value)
        self.n_read += 1
        if len(self.columns["ordinal"]) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        self.batches.append(pa.RecordBatch.from_pydict(self.columns, schema=LOG_SCHEMA))
        for column in self.columns.values():
            column.clear()

    def table(self) -> pa.Table:
        self._flush()
        table, self.batches = pa.Table.from_batches(self.batches, LOG_SCHEMA), []
        return table


def gather_items(rows: pa.Table) -> tuple[pa.Table, list[tuple[int, str, Row]]]:
    """One item per media (sample_id), in the order its first row was read, with every row's texts and
    row numbers; and the rows that contradict their item's first row (another modality, a document
    named twice) as (ordinal, source, Row with the error).

    Only the ids are sorted: where every row is an item of its own (a URL list) the rows as read are
    the items and no column is copied; otherwise the columns are taken once, in item order."""
    order = pc.sort_indices(rows, [("sample_id", "ascending"), ("ordinal", "ascending")]).to_numpy()
    first = _run_starts(rows.column("sample_id").take(pa.array(order)))  # in sorted order
    run = np.cumsum(first) - 1
    modality = rows.column("modality").combine_chunks().dictionary_encode()
    names = modality.dictionary.to_pylist()
    codes = modality.indices.to_numpy(zero_copy_only=False)[order]
    # an item of a composite kind (a document) is made of its one row: a second naming it contradicts it
    composite = [i for i, name in enumerate(names) if getattr(KINDS.get(name), "composite", False)]
    wrong = (codes != codes[np.flatnonzero(first)][run]) | (~first & np.isin(codes, composite))
    contradicting = []
    if wrong.any():
        contradicting = _contradicting(rows, order[wrong], order[np.flatnonzero(first)[run[wrong]]])
        order, first = order[~wrong], first[~wrong]
    if first.all() and len(order) == rows.num_rows:  # every row an item of its own
        item_of_row, by_item = np.arange(rows.num_rows), None
        bounds = np.arange(rows.num_rows + 1)
        items = rows.select(_FIRST_ROW).append_column("texts", rows.column("texts"))
    else:
        leads = order[first]  # each item's first row, items in id order
        reading = np.empty(len(leads), np.int64)
        reading[np.argsort(leads, kind="stable")] = np.arange(len(leads))  # an item's place in reading order
        item_of_kept = reading[np.cumsum(first) - 1]
        by_item = order[np.argsort(item_of_kept, kind="stable")]  # rows grouped by item, each by ordinal
        item_of_row = np.full(rows.num_rows, -1)
        item_of_row[order] = item_of_kept
        bounds = np.zeros(len(leads) + 1, np.int64)
        np.cumsum(np.bincount(item_of_kept, minlength=len(leads)), out=bounds[1:])
        items = rows.select(_FIRST_ROW).take(pa.array(np.sort(leads)))
        items = items.append_column("texts", _concatenated(rows.column("texts").take(pa.array(by_item)), bounds))
    numbers = rows.column("number") if by_item is None else rows.column("number").take(pa.array(by_item))
    source_rows = pa.ListArray.from_arrays(pa.array(bounds, pa.int32()), numbers.combine_chunks())
    items = items.append_column("source_rows", source_rows)
    items = items.append_column("part_of", _named_per_item(rows, "part_of", item_of_row, items.num_rows))
    items = items.append_column("named_groups", _named_per_item(rows, "group", item_of_row, items.num_rows))
    return items, contradicting


def _concatenated(lists: pa.ChunkedArray, bounds: np.ndarray) -> pa.Array:
    """Lists joined per item: item i is the concatenation of lists bounds[i] to bounds[i+1]."""
    lists = lists.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
    ends = np.concatenate([[0], np.cumsum(lengths)])[bounds]
    return pa.ListArray.from_arrays(pa.array(ends, pa.int32()), pc.list_flatten(lists))


def _run_starts(ids: pa.ChunkedArray) -> np.ndarray:
    """True where a sorted column's value differs from the one before."""
    ids = ids.combine_chunks()
    first = np.ones(len(ids), bool)
    if len(ids) > 1:
        first[1:] = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    return first


def _contradicting(rows: pa.Table, wrong: np.ndarray, their_first: np.ndarray) -> list[tuple[int, str, Row]]:
    found = []
    named = rows.take(pa.array(wrong)).to_pylist()
    firsts = rows.select(["number", "modality"]).take(pa.array(their_first)).to_pylist()
    for r, f in zip(named, firsts):
        error = (
            f"{r['key']} is named as {f['modality']} on row {f['number']} and as {r['modality']} here"
            if r["modality"] != f["modality"]
            else f"document {r['key']} again (first on row {f['number']})"
        )
        texts = [{"text": t["text"], "kind": t["kind"]} for t in r["texts"] or []]
        found.append((r["ordinal"], r["source"], Row(r["number"], media=r["source_uri"], texts=texts, error=error)))
    return found


def _named_per_item(rows: pa.Table, column: str, item_of_row: np.ndarray, n_items: int) -> pa.Array:
    """Per item, the distinct values its rows give in `column` (a document, a group), in reading order;
    null for the items none of whose rows give one (most). Rows that contradict their item count not."""
    named = pc.is_valid(rows.column(column)).to_numpy(zero_copy_only=False)
    if not named.any():
        return pa.nulls(n_items, pa.list_(pa.string()))
    found: list[list[str] | None] = [None] * n_items
    for i, value in zip(np.flatnonzero(named).tolist(), rows.column(column).filter(pa.array(named)).to_pylist()):
        item = item_of_row[i]
        if item >= 0 and value not in (found[item] or ()):
            found[item] = (found[item] or []) + [value]
    return pa.array(found, pa.list_(pa.string()))


def group_names(items: pa.Table) -> pa.Array:
    """Each item's group. An item's labels are its own (source:key) and any group its rows name; items
    sharing a label are one group, named after the smallest group a row named, else the smallest item
    label. Items that name no group and that no row names are their own group (most of a URL list),
    and are never put through the union-find."""
    own = pc.binary_join_element_wise(items.column("source"), items.column("key"), ":")
    named = items.column("named_groups")
    if named.null_count == len(named):
        return own
    named_set = pa.array(sorted(set(pc.list_flatten(named).to_pylist())), pa.string())
    involved = pc.or_(pc.is_valid(named), pc.is_in(own, named_set)).to_numpy(zero_copy_only=False)
    labels = [
        [o, *(n or [])]
        for o, n in zip(own.filter(pa.array(involved)).to_pylist(), named.filter(pa.array(involved)).to_pylist())
    ]
    names = own.to_pylist()
    for position, name in zip(np.flatnonzero(involved).tolist(), _group_names(labels)):
        names[position] = name
    return pa.array(names, pa.string())


def _group_names(labels: list[list[str]]) -> list[str]:
    """Labels are [the item's own, then any group its rows name]; see `group_names`."""
    groups = UnionFind()
    for own, *named in labels:
        for label in named:
            groups.union(own, label)
    named_min: dict[str, str] = {}
    own_min: dict[str, str] = {}
    for own, *named in labels:
        root = groups.find(own)
        own_min[root] = min(own_min.get(root, own), own)
        if named:
            named_min[root] = min(named_min.get(root, min(named)), min(named))
    roots = [groups.find(own) for own, *_ in labels]
    return [named_min.get(root) or own_min[root] for root in roots]


# the Sample columns a plan's rows fill: what the first stage of a build can read
PLANNED = frozenset(
    {
        "sample_id", "source", "group_id", "modality", "texts", "media_size", "source_uri", "clip_start_s",
        "clip_end_s", "region", "segments", "part_of", "meta", "source_rows", "partition", "run_id",
    }
)  # fmt: skip


def as_samples(items: pa.Table, **constants: str) -> pa.Table:
    """A slice of gathered items as a Sample table (every other column null; `constants` repeated)."""
    items = items.set_column(items.schema.get_field_index("texts"), "texts", _sourced(items))
    columns = []
    for field in SAMPLE_SCHEMA:
        if field.name in items.column_names:
            columns.append(items.column(field.name).cast(field.type))
        elif field.name in constants:
            columns.append(pa.repeat(pa.scalar(constants[field.name], field.type), items.num_rows))
        else:
            columns.append(pa.nulls(items.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=SAMPLE_SCHEMA)


def _sourced(items: pa.Table) -> pa.Array:
    """The items' texts as Sample texts: each names its item's source; what clean measures is null."""
    texts = items.column("texts").combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(texts), 0).to_numpy()
    flat = pc.list_flatten(texts)
    sources = items.column("source").combine_chunks().take(pc.list_parent_indices(texts))
    given = {"text": flat.field("text"), "kind": flat.field("kind"), "source": sources}
    fields = [given.get(f.name, pa.nulls(len(flat), f.type)) for f in TEXT]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.StructArray.from_arrays(fields, fields=list(TEXT)))
