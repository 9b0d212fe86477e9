"""The dedupe stage: the decision applied to one shard."""

from __future__ import annotations

from ...core import storage
from ...core.settings import Strict
from ...media.text import unique_texts
from ..stage import Reject, RowStage


class ApplyDecision(Strict):
    decision_uri: str  # what decide_duplicates wrote


class DedupeStage(RowStage):
    name = "dedupe"
    Config = ApplyDecision
    reads = frozenset({"sha256"})
    writes = frozenset({"group_id", "texts"})

    def setup(self) -> None:
        self.decisions = {r["sample_id"]: r for r in storage.read_parquet(self.config.decision_uri).to_pylist()}

    def check(self, row: dict):
        decision = self.decisions.get(row["sample_id"])
        if decision is None:
            return row
        if decision["duplicate_of"] is not None:
            return Reject(decision["reason"], decision["detail"], duplicate_of=decision["duplicate_of"])
        texts, repeated = unique_texts((row["texts"] or []) + (decision["merged_texts"] or []))
        for text, reason in repeated:
            self.drop_text(row, text, reason, "merged from a copy")
        return {**row, "texts": texts, "group_id": decision["group_id"]}
