"""Partitions: a dataset is published one partition (usually a day, 2026-01-31) at a time."""

from __future__ import annotations

import datetime as dt
import re

PARTITION_FIELD = re.compile(r"\{partition(?::([^}]*))?\}")


def fill_partition(template: str, partition: str) -> str:
    """`s3://raw/{partition}/list.parquet` or `raw/{partition:%Y/%m/%d}/list.parquet` (strftime parts,
    for a partition that is a date: 2026-01-31) for one partition."""

    def fill(match: re.Match) -> str:
        if not match.group(1):
            return partition
        try:
            return dt.date.fromisoformat(partition).strftime(match.group(1))
        except ValueError:
            raise ValueError(
                f"{template} formats the partition as a date, but {partition!r} is not one (YYYY-MM-DD)"
            ) from None

    return PARTITION_FIELD.sub(fill, template)


def days(start: str, end: str) -> list[str]:
    """Every date from start to end, both included, as partitions (YYYY-MM-DD)."""
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if last < first:
        raise ValueError(f"--end {end} is before --start {start}")
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
