"""Rules: measure, then decide. The build and its dry run judge with this one code.

A rule reads one value off an item (`measure`), then turns that value into a reject code and a
detail, or None to keep it (`decide`). Numeric measurements are stored in the item's `scores`
under the rule's `score`, so thresholds can be re-tuned later without decoding anything again.
A text rule judges each text on its own: a failing text is dropped from the item, and only an item
left with no text is rejected.

`RuleStage` runs a list of rules as a stage (filter, align); `RuleStage.judge` returns every rule's
measurement and verdict, `RuleStage.outcome` what the stage does with them. `mmetl build --dry-run`
(tasks/build/audit.py) reports the judgements, the build applies the outcome: both through these methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ..core.schema import with_scores
from .stage import Reject, RowStage

Failure = tuple[str, str]  # (reject code, detail)


class Rule(ABC):
    """One check of an item. `modality` limits it to one kind of item (None: every item); `score` names
    the item score its numeric measurement is stored as (None: not stored)."""

    modality: str | None = None
    score: str | None = None

    def applies(self, row: dict) -> bool:
        return self.modality in (None, row["modality"])

    @abstractmethod
    def measure(self, row: dict) -> Any:
        """The value judged; None when there is nothing to judge (a fact the item does not have)."""

    @abstractmethod
    def decide(self, value: Any) -> Failure | None:
        """(code, detail) for a value that fails, None for one that passes."""

    def number(self, value: Any) -> float | None:
        """The measurement as a score, if it is one."""
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    @property
    def label(self) -> str:
        """How reports name this rule's score: `image min_side`, `caption_words`."""
        return f"{self.modality} {self.score}" if self.modality else str(self.score)


class TextRule(Rule):
    """A rule over one text of an item ({text, kind, lang, lang_score, flags, ...}); `modality` limits it
    to the texts of one kind of item."""


@dataclass
class Judgement:
    """Every rule's verdict on one item: its scores, the item rules it fails (in rule order) and, per
    text, the text rules that text fails."""

    scores: dict[str, float] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    text_failures: list[list[Failure]] = field(default_factory=list)
    # every numeric measurement, by rule label (item and text rules): the dry run's histograms
    measured: list[tuple[str, float]] = field(default_factory=list)
    needs_text: bool = True  # a picture of a document stays with no text of its own

    def reject(self) -> Failure | None:
        """What the stage rejects the item for: its first failing item rule, else its texts all failing."""
        if self.failures:
            return self.failures[0]
        if any(not failed for failed in self.text_failures) or not self.needs_text:
            return None
        failed = [f[0] for f in self.text_failures]
        code, detail = failed[0] if failed else ("no_text", "no texts")
        return code, f"all {len(failed)} text(s) fail; the first: {detail}"


class RuleStage(RowStage):
    """A stage made of rules: `item_rules` judge the item, `text_rules` each of its texts."""

    item_rules: list[Rule]
    text_rules: list[TextRule]

    def rules_for(self, row: dict) -> tuple[list[Rule], list[TextRule]]:
        """The rules this item is judged by (a stage may judge some sources by their own)."""
        return self.item_rules, self.text_rules

    def judge(self, row: dict) -> Judgement:
        judgement = Judgement(needs_text=not row.get("part_of"))
        item_rules, text_rules = self.rules_for(row)
        for rule in item_rules:
            if not rule.applies(row) or (value := rule.measure(row)) is None:
                continue
            if (number := rule.number(value)) is not None:
                judgement.measured.append((rule.label, number))
                if rule.score:
                    judgement.scores[rule.score] = number
            if failure := rule.decide(value):
                judgement.failures.append(failure)
        for text in row["texts"] or []:
            failures = []
            for rule in text_rules:
                if not rule.applies(row) or (value := rule.measure(text)) is None:
                    continue
                if (number := rule.number(value)) is not None:
                    judgement.measured.append((rule.label, number))
                if failure := rule.decide(value):
                    failures.append(failure)
            judgement.text_failures.append(failures)
        return judgement

    def outcome(self, row: dict, judgement: Judgement) -> tuple[dict | Reject, list[tuple[dict, Failure]]]:
        """The item as this stage passes it on (scores set, failing texts removed) or its Reject, and the
        texts dropped from a kept item with why."""
        if failure := judgement.reject():
            return Reject(*failure), []
        texts = row["texts"] or []
        kept = [t for t, failed in zip(texts, judgement.text_failures) if not failed]
        dropped = [(t, failed[0]) for t, failed in zip(texts, judgement.text_failures) if failed]
        return {**with_scores(row, **judgement.scores), "texts": kept}, dropped

    def check(self, row: dict):
        out, dropped = self.outcome(row, self.judge(row))
        for text, (code, detail) in dropped:
            self.drop_text(row, text, code, detail)
        return out
