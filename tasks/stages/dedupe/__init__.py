"""Dedupe: copies of one picture, recording or clip become one item with the union of their texts,
and copies never straddle splits.

Global step in three phases. Signatures are the cleaned shards' own columns, read by projection.
`decide_duplicates` makes one decision over all shards (and the other partitions' published items):

- pairs, each with its evidence (tasks/similar/): identical normalized bytes (sha256); images whose
  pHashes lie within `image_radius` bits; sounds whose Chromaprints differ in at most `audio_max_ber`
  of their bits, or that share `audio_min_landmarks` landmarks at one alignment, each verified on the
  waveform; videos whose keyframe pHashes (median) lie within `video_radius` (pictures decide:
  videos whose sound tracks match as sounds do only join one group, neither is rejected);
- pairs form clusters (union-find); in each, one member is kept by the `keep` policy and the others
  are rejects (`duplicate:exact|near|audio|video`, or `duplicate:published` when an earlier partition
  holds the cluster) naming it and the distance; their texts join the kept item and their groups
  its group;
- near-identical captions (MinHash LSH) join their items' groups without merging them (rejects
  `duplicate:caption` only for the sources in `captions.drop`); a caption on `boilerplate_items` or
  more items is flagged in the report and used for nothing.

`DedupeStage` applies it. The decision lists only the items it changes, so it stays small when
duplicates are rare; its summary (counts per reason and source, boilerplate) is `<decision>.json`.
"""

from .apply import ApplyDecision, DedupeStage
from .config import CaptionDedupeConfig, DedupeConfig
from .decide import DedupeDecision, decide_duplicates, read_verified, withdrawn_uri
from .pairs import find_pairs

__all__ = [
    "ApplyDecision", "CaptionDedupeConfig", "DedupeConfig", "DedupeDecision", "DedupeStage", "decide_duplicates",
    "find_pairs", "read_verified", "withdrawn_uri",
]  # fmt: skip
