"""The stage interface: plain Python that neither Prefect nor Ray appears in.

A stage is set up once per worker process (load a model, open a file) and then processes Arrow
batches of items, returning the items it keeps, Reject rows for the items it drops, and
DroppedText rows for texts it removes from items that stay. The engine runs stages over shards;
tests call them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import pyarrow as pa
from pydantic import BaseModel

from ..core.schema import DROPPED_TEXT_SCHEMA, REJECT_SCHEMA, SAMPLE_SCHEMA, check_reason, reject_row, table_of
from ..core.settings import Strict


class StageOutput(NamedTuple):
    kept: pa.Table  # Sample rows
    rejected: pa.Table  # Reject rows: every input item is in exactly one of kept and rejected
    dropped_texts: pa.Table  # DroppedText rows


@dataclass(frozen=True)
class Resources:
    """What one shard of a stage needs from a worker; the Ray adapter asks for exactly this."""

    cpus: float = 1
    gpus: float = 0  # a share of one (0.25) lets several workers use one GPU

    def __or__(self, other: Resources) -> Resources:
        """Both stages' needs at once (a step runs them in one worker): the most of each."""
        return Resources(max(self.cpus, other.cpus), max(self.gpus, other.gpus))

    @classmethod
    def for_model(cls, settings: dict, gpus: int) -> Resources:
        """A model stage's needs (settings with `device` and `gpu_share`): a GPU, or `gpu_share` of one, per
        worker where the device is `cuda`, or `auto` on a cluster with GPUs; else a CPU."""
        device = settings.get("device", "auto")
        wants_gpu = device == "cuda" or (device == "auto" and gpus > 0)
        return cls(gpus=settings.get("gpu_share", 1.0)) if wants_gpu else cls()

    def ray_options(self) -> dict[str, float]:
        return {"num_cpus": self.cpus, **({"num_gpus": self.gpus} if self.gpus else {})}


class Stage:
    """`Config` is the stage's settings model (pydantic): its defaults are the only ones. A stage is
    made from that model, or from its fields as keywords, which the model validates."""

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]] = Strict  # no settings
    resources: ClassVar[Resources] = Resources()
    # Sample columns this stage needs filled by the plan or a stage before it, and those it fills: a plan
    # that puts a stage before what it reads is refused when it is made (tasks/build/registry.py)
    reads: ClassVar[frozenset[str]] = frozenset()
    writes: ClassVar[frozenset[str]] = frozenset()
    # a stage that makes items of the ones it takes in (a video's scenes) names the column that holds, in each
    # item it makes, the sample id of the item it was made from: the engine reconciles what it took in with
    # the items kept whole or made from, and counts the items handed on apart
    derived_from: ClassVar[str | None] = None

    def __init__(self, config: BaseModel | None = None, /, **fields: Any):
        if config is not None and fields:
            raise TypeError(f"{type(self).__name__}: give a {self.Config.__name__} or its fields, not both")
        self.config = self.Config.model_validate(fields) if config is None else config

    @classmethod
    def resources_for(cls, settings: dict, gpus: int) -> Resources:
        """What one shard with these settings asks of a worker, on a cluster with `gpus` GPUs."""
        return cls.resources

    def setup(self) -> None:
        """Once per worker process, before the first batch."""

    def start_shard(self, shard: str) -> None:
        """Before a shard's first batch: for a stage that keeps something per shard (collect's downloads)."""

    def prefetch(self, batch: pa.Table) -> None:
        """Shown the next batch before this one is processed (first stage of a step only): a stage whose
        work waits on the network starts it now, so no batch waits for the slowest item of the one before."""

    def finish_shard(self, shard: str) -> None:
        """After a shard's last batch, before its outputs are committed (the score stage's embeddings)."""

    def process(self, batch: pa.Table) -> StageOutput:
        raise NotImplementedError


class RowStage(Stage):
    """A stage that looks at one item at a time: `check` returns the item (possibly changed) or a Reject (or,
    in a stage with `derived_from`, a list of the items made from it).

    Items are plain dicts of Sample columns. Return `Reject("code", "detail")` to drop one; the
    reason becomes "<name>:<code>", or stays as given when it already names its kind
    ("decode:truncated", "text:empty"). To remove one text of an item that stays, return the item
    without it and call `drop_text`.
    """

    def check(self, row: dict) -> dict | Reject:
        raise NotImplementedError

    def reason(self, code: str) -> str:
        return code if ":" in code else f"{self.name}:{code}"

    def drop_text(self, row: dict, text: dict, code: str, detail: str | None = None) -> None:
        self._dropped.append(
            {
                "sample_id": row["sample_id"],
                **text,
                "stage": self.name,
                "reason": check_reason(self.reason(code)),
                "detail": detail,
            }
        )

    def process(self, batch: pa.Table) -> StageOutput:
        kept, rejected = [], []
        self._dropped: list[dict] = []
        for row in batch.to_pylist():
            try:
                out = self.check(row)
            except Exception as e:  # a bug, not bad input (bad input is a Reject): name the item
                raise ItemError(
                    f"stage {self.name}, item {row.get('sample_id')} of source {row.get('source')} "
                    f"({row.get('source_uri')}): {type(e).__name__}: {e}"
                ) from e
            if isinstance(out, Reject):
                rejected.append(reject_row(row, self.name, self.reason(out.code), out.detail, out.duplicate_of))
            elif isinstance(out, list):
                kept += out
            else:
                kept.append(out)
        return StageOutput(
            table_of(kept, SAMPLE_SCHEMA),
            table_of(rejected, REJECT_SCHEMA),
            table_of(self._dropped, DROPPED_TEXT_SCHEMA),
        )


class ItemError(RuntimeError):
    """A stage failed on one item; the message names it (the engine adds the step and shard)."""


class Reject:
    __slots__ = ("code", "detail", "duplicate_of")

    def __init__(self, code: str, detail: str | None = None, duplicate_of: str | None = None):
        self.code = code
        self.detail = detail
        self.duplicate_of = duplicate_of

    def __repr__(self) -> str:
        return f"Reject({self.code!r}, {self.detail!r})"
