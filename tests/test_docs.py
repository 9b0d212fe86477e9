"""The documentation stays true: every recipe key is documented, every file it names exists, and the
README stays a front door."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from tasks.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ROOTS = ("tasks/", "flows/", "tests/", "bench/", "docs/", "infra/", "deployments/", "recipes/")


def recipe_keys(model: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    """Every setting of a recipe, as a dotted path (sources are documented per kind in docs/sources.md)."""
    keys = []
    for name, field in model.model_fields.items():
        if model is Recipe and name in ("source", "sources"):
            continue
        nested = [t for t in typing.get_args(field.annotation) or (field.annotation,) if _is_model(t)]
        keys += recipe_keys(nested[0], f"{prefix}{name}.") if nested else [f"{prefix}{name}"]
    return keys


def _is_model(t) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def test_every_recipe_key_is_in_the_reference():
    reference = (REPO / "docs" / "recipes.md").read_text()
    keys = recipe_keys()
    assert len(keys) > 60 and "clean.image.resize.short_side" in keys
    missing = [key for key in keys if f"`{key}`" not in reference and f"`{key} " not in reference and key != "name"]
    # paired keys are documented together: `filter.min_audio_s` / `filter.max_audio_s`
    missing = [key for key in missing if not re.search(rf"`{re.escape(key)}`", reference)]
    assert missing == []


def test_every_file_the_docs_name_exists():
    named = set()
    for page in PAGES:
        text = page.read_text()
        links = re.findall(r"\]\(([^)#]+)\)", text)
        named |= {(page.parent / link).resolve().relative_to(REPO).as_posix() for link in links if "://" not in link}
        # bench/out/ is what `make bench` writes, not part of the repository
        named |= {t for t in re.findall(r"`([\w./-]+)`", text) if t.startswith(ROOTS) and "bench/out/" not in t}
    assert named, "no file named at all: the check reads nothing"
    missing = sorted(n for n in named if not (REPO / n.split("::")[0]).exists())
    assert missing == []


def test_the_readme_is_a_front_door():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in sorted((REPO / "docs").glob("*.md")):  # the docs index lists every page
        assert f"(docs/{page.name})" in readme, page.name
    commands = re.findall(r"^make (\w[\w-]*)", readme, re.M)
    makefile = (REPO / "Makefile").read_text()
    assert {"demo", "test"} <= set(commands) and all(re.search(rf"^{c}:", makefile, re.M) for c in commands)
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)  # CI runs the README's test command
