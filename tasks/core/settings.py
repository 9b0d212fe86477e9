"""The one base of every settings model (a stage's, a rule's, a media kind's, a source's): a key it does not
declare is refused, naming its path in the recipe, and a model once made does not change."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
