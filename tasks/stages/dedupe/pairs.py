"""Pairs: every two items found to be one media (identical bytes, then each media kind's signatures, verified
on the media where a kind says a signature is not enough), and the pairs of near-identical captions."""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...core.schema import CAPTION_KINDS
from ...media.kinds import KINDS, Fetch
from ...similar import bits
from ...similar.captions import caption_index_pairs
from ...similar.signatures import Signatures
from .config import CaptionDedupeConfig, DedupeConfig


def find_pairs(
    items: Signatures, config: DedupeConfig, fetch: Fetch | None = None, known: dict | None = None
) -> tuple[dict[tuple[str, str], tuple[str, str]], dict, dict]:
    """(a, b) -> (reason, what was measured) for every two items found to be one media: identical bytes
    first, then each media kind's own signatures (tasks/media/kinds/), each candidate verified on the
    media itself (`fetch`: the media of items by key) where the kind says a signature is not enough;
    the first evidence found stays. Also returns each kind's verification report, and the score of every
    pair verified ((a, b) -> score; `known`: scores measured before, reused)."""
    evidence = {pair: ("duplicate:exact", "same media bytes") for pair in items.exact_pairs()}
    reports, scores = {}, {}
    for kind in KINDS.values():
        candidates = [c for c in kind.duplicate_pairs(items, config) if (c[0], c[1]) not in evidence]
        confirmed, report, measured = kind.verified(candidates, fetch, config, known)
        scores.update(measured)
        if report:
            reports[kind.name] = report
        for a, b, reason, measured_text in confirmed:
            evidence.setdefault((a, b), (reason, measured_text))
    return evidence, reports, scores


@dataclass
class Found:
    """What the search found: copies with their evidence, related items, caption pairs; what it verified."""

    evidence: dict[tuple[str, str], tuple[str, str]]
    verification: dict
    scores: dict[tuple[str, str], float]
    related: list[tuple[str, str, str]]
    captions: list[tuple[str, str]]

    @property
    def named(self) -> set[str]:
        """Every item a pair names: the only ones read as rows."""
        pairs = itertools.chain(self.evidence, self.captions, ((a, b) for a, b, _ in self.related))
        return {x for pair in pairs for x in pair}

    @functools.cached_property
    def pairs_of(self) -> dict[str, list[tuple[str, str]]]:
        """Item -> its pairs, in order: what `_why` looks through."""
        pairs_of = defaultdict(list)
        for pair in sorted(self.evidence):
            pairs_of[pair[0]].append(pair)
            pairs_of[pair[1]].append(pair)
        return pairs_of


def search_pairs(found: Signatures, ours: pa.Table, published: pa.Table | None, config: DedupeConfig, fetch) -> Found:
    # captions are compared on a thread while the media signatures are: both spend most of their time
    # in numpy, which lets go of the GIL (bench/driver.py); the thread then helps the pHash search
    with ThreadPoolExecutor(1) as pool, bits.sharing(pool):
        captions = pool.submit(caption_pairs, ours, published, config.captions)
        evidence, verification, scores = find_pairs(found, config, fetch)
        related = [(a, b, why) for kind in KINDS.values() for a, b, why, _ in kind.related_pairs(found, config)]
        return Found(evidence, verification, scores, related, captions.result())


def captions_of(texts: pa.ChunkedArray) -> pa.Array:
    """Each item's captions as a list of plain strings (as the published index keeps them): a text's
    other fields are not needed to compare captions."""
    texts = texts.combine_chunks()
    flat = pc.list_flatten(texts)
    parents = pc.list_parent_indices(texts).to_numpy()
    mine = pc.is_in(flat.field("kind"), pa.array(sorted(CAPTION_KINDS))).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(texts) + 1, np.int32)
    np.cumsum(np.bincount(parents[mine], minlength=len(texts)), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), flat.field("text").filter(pa.array(mine)))


def caption_pairs(ours: pa.Table, published: pa.Table | None, config: CaptionDedupeConfig) -> list:
    """(a, b) for items with near-identical captions: ours (keyed by sample_id), then the published ones
    (by partition/sample_id). The captions' strings go to tasks/similar/captions.py as one Arrow column,
    which it reads a block at a time; each string's item is kept beside it."""
    if config.threshold is None:
        return []
    tables = [ours, *([published] if published is not None else [])]
    lists = [chunk for table in tables for chunk in table.column("captions").chunks]
    if not lists:
        return []
    offsets = np.cumsum([0] + [len(captions) for captions in lists])
    owner = np.concatenate([pc.list_parent_indices(c).to_numpy() + o for c, o in zip(lists, offsets.tolist())])
    found = caption_index_pairs(pa.chunked_array([pc.list_flatten(c) for c in lists], pa.string()), config.threshold)
    pairs = sorted({(int(owner[x]), int(owner[y])) for x, y, _ in found if owner[x] != owner[y]})
    every_key = pa.chunked_array([chunk for table in tables for chunk in table.column("key").chunks], pa.string())
    named = every_key.take(pa.array([x for pair in pairs for x in pair], pa.int64())).to_pylist()
    return list(zip(named[::2], named[1::2]))
