"""The keep policy: which member of a cluster of copies stays, and why, in words a reject can carry."""

from __future__ import annotations

import math

from ...media.kinds import KINDS, Fetch
from .config import DedupeConfig


def keep_order(config: DedupeConfig, central: dict[str, float] | None = None, policies: dict | None = None):
    """Sort key of a cluster's members: the first is kept (see KEEP_CRITERIA). Ties fall to the smallest
    sample_id, so the choice never depends on shard order. `central`: each member's mean distance to
    the others (`centrality`), for the `best` policy. `policies`: POLICIES, or SEMANTIC_POLICIES for items
    that are different media."""
    criteria = {name: measure for name, measure, _ in KEEP_CRITERIA}
    prefer = {source: rank for rank, source in enumerate(config.prefer_sources)}
    central = central or {}
    policy = (policies or POLICIES)[config.keep]

    def key(item):
        measured = tuple(
            round(central.get(item["sample_id"], 0.0), 6) if name == "medoid" else criteria[name](item)
            for name in policy
        )
        return (prefer.get(item["source"], len(prefer)), *measured, item["sample_id"])

    return key


def _pixels(item) -> int:
    return (item["width"] or 0) * (item["height"] or 0)


def _sound_rate(item) -> float:
    """Samples a second a sound really needs: its rate, or twice its measured bandwidth when that is lower
    (a clip resampled up from 8 kHz is an 8 kHz clip)."""
    rate = float(item["sample_rate"] or 0)
    bandwidth = next((s["value"] for s in item["scores"] or [] if s["name"] == "bandwidth_hz"), None)
    return min(rate, 2 * bandwidth) if bandwidth else rate


def _resolution(item) -> tuple:
    """Pixels; for a sound, its effective rate in half-octave steps (bandwidths measured on copies of
    one recording differ by a few hundred hertz), then channels."""
    rate = _sound_rate(item)
    return (-_pixels(item), -round(2 * math.log2(rate)) if rate else 0, -(item["channels"] or 0))


def _score(item, name: str) -> float:
    """Minus a score the item holds (0 where it has none): higher scores sort first."""
    return -next((s["value"] for s in item["scores"] or [] if s["name"] == name), 0.0)


def _as_it_came(item) -> bool:
    """Published in the container it came in (not re-encoded by clean: a PNG or WebP became a JPEG)."""
    source = (item["source_uri"] or "").split("?")[0].rsplit("/", 1)[-1].rsplit(".", 1)[-1].lower()
    return source.replace("jpeg", "jpg") == (item["media_ext"] or "")


# (name, what sorts first, why it wins): each a measure where smaller is better
KEEP_CRITERIA = [
    ("resolution", _resolution, "higher resolution"),
    ("not_resampled_up", lambda i: (i["sample_rate"] or 0) > 1.25 * _sound_rate(i), "not resampled up"),
    ("medoid", lambda i: 0, "the copy the others are edits of (closest to all of them)"),  # from `centrality`
    ("as_it_came", lambda i: not _as_it_came(i), "published as it came, not re-encoded"),
    ("density", lambda i: -(i["media_size"] or 0) / max(_pixels(i) or (i["duration_s"] or 0) * 1000, 1),
     "more bytes for its size, in the same codec"),
    ("duration", lambda i: -(i["duration_s"] or 0), "longer"),
    ("earliest", lambda i: (i["partition"] or "", min(i["source_rows"] or [0])), "seen first"),
    ("align", lambda i: round(_score(i, "align_max"), 6), "its text matches it better (align score)"),
    ("aesthetic", lambda i: round(_score(i, "aesthetic"), 6), "more aesthetic"),
]  # fmt: skip
POLICIES = {
    # the best copy: most pixels (or the samples a second its sound really holds, and channels), then
    # not resampled up, then the least edited, then one published as it came, then the most bytes for its size
    "best": ("resolution", "not_resampled_up", "medoid", "as_it_came", "density", "duration"),
    "largest": ("resolution", "duration"),
    "longest": ("duration", "resolution"),
    "earliest": ("earliest",),
}
# a semantic cluster holds different media: the best is the sharpest, best described, most aesthetic, not a medoid
SEMANTIC_POLICIES = {**POLICIES, "best": ("resolution", "align", "aesthetic", "duration")}


def centrality(members: list[dict], fetch: Fetch | None = None) -> dict[str, float]:
    """Each member's mean distance to the others (its kind's `mean_distances`, on the media `fetch` gives
    where the kind compares media): an original is close to each of its edits, edits of different kinds
    are farther from each other."""
    found = {}
    for name in {m["modality"] for m in members}:  # one, in practice: one media is one kind
        means = KINDS[name].mean_distances(members, fetch)
        found.update((m["sample_id"], d) for m, d in zip(members, means) if m["modality"] == name)
    return found


def why_kept(kept: dict, copy: dict, config: DedupeConfig, central: dict[str, float], policies=None) -> str:
    """The first criterion of the policy on which the kept item beat this copy."""
    if config.prefer_sources and kept["source"] != copy["source"]:
        return f"kept from the preferred source {kept['source']}"
    criteria = {name: (measure, why) for name, measure, why in KEEP_CRITERIA}
    for name in (policies or POLICIES)[config.keep]:
        measure, why = criteria[name]
        a, b = (round(central.get(x["sample_id"], 0.0), 6) if name == "medoid" else measure(x) for x in (kept, copy))
        if a != b:
            return f"kept as {why}"
    return "kept as the smallest id of equals"
