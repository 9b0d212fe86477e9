"""The stage interface: plain Python that neither Prefect nor Ray appears in.

A stage is set up once per worker process (load a model, open a file) and then processes Arrow
batches of Sample rows, returning the rows it keeps and reject rows for the ones it drops. The
engine runs it over shards; tests call it directly.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from .schema import SAMPLE_SCHEMA, rejects_from


class Stage:
    name: ClassVar[str]
    # what one shard of this stage needs from a worker; the Ray adapter asks for exactly this
    # (a model-scoring stage would say {"num_cpus": 1, "num_gpus": 1})
    resources: ClassVar[dict[str, float]] = {"num_cpus": 1}

    def __init__(self, **config: Any):
        self.config = config

    def setup(self) -> None:
        """Once per worker process, before the first batch."""

    def process(self, batch: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Return (kept Sample rows, Reject rows); every input row lands in exactly one of them."""
        raise NotImplementedError


class RowStage(Stage):
    """A stage that looks at one row at a time: `check` returns the row (possibly enriched) or a reject.

    Rows are plain dicts of Sample columns. Return `Reject("code", "detail")` to drop a row; the
    reason becomes "<name>:<code>", or stays as given when it already names its kind
    ("decode:truncated", "text:empty").
    """

    def check(self, row: dict) -> dict | "Reject":
        raise NotImplementedError

    def process(self, batch: pa.Table) -> tuple[pa.Table, pa.Table]:
        kept, dropped, reasons, details = [], [], [], []
        for row in batch.to_pylist():
            out = self.check(row)
            if isinstance(out, Reject):
                dropped.append(row)
                reasons.append(out.code if ":" in out.code else f"{self.name}:{out.code}")
                details.append(out.detail)
            else:
                kept.append(out)
        kept_table = pa.Table.from_pylist(kept, schema=SAMPLE_SCHEMA)
        dropped_table = pa.Table.from_pylist(dropped, schema=SAMPLE_SCHEMA)
        return kept_table, rejects_from(dropped_table, self.name, reasons, details)


class Reject:
    __slots__ = ("code", "detail")

    def __init__(self, code: str, detail: str | None = None):
        self.code = code
        self.detail = detail

    def __repr__(self) -> str:
        return f"Reject({self.code!r}, {self.detail!r})"
