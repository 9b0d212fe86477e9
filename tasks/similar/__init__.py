"""Near-duplicate search, one module per signal: 64-bit hashes (image pHash, video keyframes), caption
shingles (MinHash LSH), sound fingerprints (Chromaprint). Each returns (a, b, distance) pairs, a < b,
found without comparing every item with every other and verified exactly."""

from .bits import hamming_pairs, near_pairs, sequence_pairs
from .captions import caption_pairs
from .sounds import fingerprint_pairs

__all__ = ["caption_pairs", "fingerprint_pairs", "hamming_pairs", "near_pairs", "sequence_pairs"]
