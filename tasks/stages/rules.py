"""Rules: measure, then decide. The build and its dry run judge with this one code.

A rule reads one value off an item (`measure`), then turns that value into a reject code and a
detail, or None to keep it (`decide`). Numeric measurements are stored in the item's `scores`
under the rule's `score`, so thresholds can be re-tuned later without decoding anything again.
A text rule judges each text on its own: a failing text is dropped from the item, and only an item
left with no text is rejected.

`RuleStage` runs a list of rules as a stage (filter, align); `RuleStage.judge` returns every rule's
measurement and verdict, `RuleStage.outcome` what the stage does with them. Reviewers overrule a rule on the
items (or texts) they looked at (`mmetl review import`: the dataset's reviews.parquet): `keep` stands against
the rule they reviewed (the item says so in `features.review`), `reject` removes it (`review:rejected`).
`mmetl build --dry-run` (tasks/build/audit.py) reports the judgements, the build applies the outcome: both
through these methods.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ..core import storage
from ..core.schema import with_feature, with_scores
from ..core.settings import Strict
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


class Reviewed(Strict):
    """A rule stage's settings: where the reviewers' verdicts are (the dataset's reviews.parquet), if any."""

    reviews: str | None = None


class Reviews:
    """Reviewers' verdicts, by (sample id, text: None for the item) and the rule (its score's name)."""

    def __init__(self, uri: str | None):
        rows = storage.read_parquet(uri).to_pylist() if uri and storage.exists(uri) else []
        self.verdicts = {(r["sample_id"], r["text"]): (r["rule"], r["verdict"]) for r in rows}

    def says(self, sample_id: str, text: str | None) -> tuple[str, str] | None:
        """(rule, keep | reject) a reviewer said of this item (or one of its texts), if one did."""
        return self.verdicts.get((sample_id, text))


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
    overruled: list[str] = field(default_factory=list)  # the rules a reviewer's `keep` stood against

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

    @functools.cached_property
    def reviews(self) -> Reviews:
        return Reviews(getattr(self.config, "reviews", None))

    def judge(self, row: dict) -> Judgement:
        judgement = Judgement(needs_text=not row.get("part_of"))
        item_rules, text_rules = self.rules_for(row)
        said = self.reviews.says(row["sample_id"], None)
        if said and said[1] == "reject":
            judgement.failures.append(("review:rejected", f"a reviewer rejected it (rule {said[0]})"))
        for rule in item_rules:
            if not rule.applies(row) or (value := rule.measure(row)) is None:
                continue
            if (number := rule.number(value)) is not None:
                judgement.measured.append((rule.label, number))
                if rule.score:
                    judgement.scores[rule.score] = number
            if failure := rule.decide(value):
                self._unless_kept(judgement, judgement.failures, failure, said, rule)
        for text in row["texts"] or []:
            failures, on_text = [], self.reviews.says(row["sample_id"], text["text"])
            if on_text and on_text[1] == "reject":
                failures.append(("review:rejected", f"a reviewer rejected this text (rule {on_text[0]})"))
            for rule in text_rules:
                if not rule.applies(row) or (value := rule.measure(text)) is None:
                    continue
                if (number := rule.number(value)) is not None:
                    judgement.measured.append((rule.label, number))
                if failure := rule.decide(value):
                    self._unless_kept(judgement, failures, failure, on_text or said, rule)
            judgement.text_failures.append(failures)
        return judgement

    @staticmethod
    def _unless_kept(judgement: Judgement, failures: list, failure: Failure, said, rule: Rule) -> None:
        """The failure counts, unless a reviewer kept the item (or text) against this very rule."""
        if said and said == (rule.score, "keep"):
            judgement.overruled.append(rule.score)
        else:
            failures.append(failure)

    def outcome(self, row: dict, judgement: Judgement) -> tuple[dict | Reject, list[tuple[dict, Failure]]]:
        """The item as this stage passes it on (scores set, failing texts removed) or its Reject, and the
        texts dropped from a kept item with why."""
        if failure := judgement.reject():
            return Reject(*failure), []
        texts = row["texts"] or []
        kept = [t for t, failed in zip(texts, judgement.text_failures) if not failed]
        dropped = [(t, failed[0]) for t, failed in zip(texts, judgement.text_failures) if failed]
        row = with_scores(row, **judgement.scores)
        if judgement.overruled:  # what the card counts as reviewers' overrides
            row = with_feature(row, "review", {"kept_against": sorted(set(judgement.overruled))})
        return {**row, "texts": kept}, dropped

    def check(self, row: dict):
        out, dropped = self.outcome(row, self.judge(row))
        for text, (code, detail) in dropped:
            self.drop_text(row, text, code, detail)
        return out
