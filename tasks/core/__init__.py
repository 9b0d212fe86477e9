"""The core every room may use: storage (fsspec, commits, the layout), the item schema, shards and batches,
groups, partitions, redaction, memory, the media of a few stored items, and the published index."""
