"""A media kind is one class: a made-up kind registered in KINDS flows through collect, clean, dedupe, the
filter, the split and publish into tars, stats, the data card and Croissant, with no other code changed."""

from __future__ import annotations

import json
import tarfile

import pyarrow.parquet as pq
import pytest

from tasks.build.pipeline import build_locally
from tasks.core import storage
from tasks.media import MediaError
from tasks.media.kinds import KINDS, MediaKind
from tasks.recipe import Recipe


class Toy(MediaKind):
    """A file of whitespace-separated numbers (`.toy`), published as it came; its length is its duration."""

    name = "toy"
    extensions = frozenset({"toy"})
    card_tasks = ("toy-to-text",)
    member_facts = ("duration_s",)

    def __init__(self, settings) -> None:
        pass

    def clean(self, data: bytes) -> dict:
        numbers = data.split()
        if not numbers:
            raise MediaError("empty", "no numbers in the file")
        return {"media_bytes": data, "media_ext": "toy", "duration_s": float(len(numbers)), "_scores": {}}


@pytest.fixture
def toy_kind(monkeypatch):
    monkeypatch.setitem(KINDS, Toy.name, Toy)
    return Toy


def test_a_registered_kind_flows_through_the_whole_build(tmp_path, toy_kind):
    corpus = tmp_path / "corpus"
    rows = []
    for i in range(30):
        storage.write_bytes(str(corpus / f"{i:02d}.toy"), " ".join(str(i * 7 + k) for k in range(i % 5 + 1)).encode())
        rows.append({"media": f"{i:02d}.toy", "modality": "toy", "text": f"a list of numbers starting at {i * 7}"})
    storage.write_bytes(str(corpus / "copy.toy"), (corpus / "03.toy").read_bytes())  # a copy of one
    storage.write_bytes(str(corpus / "empty.toy"), b"  \n")  # nothing to decode
    rows += [
        {"media": "copy.toy", "modality": "toy", "text": "the same numbers, found again"},
        {"media": "empty.toy", "modality": "toy", "text": "an empty list"},
    ]
    (corpus / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = Recipe.model_validate(
        {"name": "toys", "source": {"name": "t", "kind": "manifest", "uri": str(corpus / "rows.jsonl")}}
    )

    layout, built = build_locally(recipe, str(tmp_path / "out"), "p")

    manifest = built["manifest"]
    assert manifest["samples"] == 30 and manifest["rejected"] == 2
    rejects = pq.read_table(f"{layout.version}/rejects.parquet").to_pylist()
    reasons = {r["source_uri"].rsplit("/", 1)[1]: r["reason"] for r in rejects}
    assert reasons in ({"copy.toy": "duplicate:exact", "empty.toy": "decode:empty"},
                       {"03.toy": "duplicate:exact", "empty.toy": "decode:empty"})  # fmt: skip
    tars = [t for split in manifest["splits"].values() for t in split["tars"]]
    assert tars and all("/toy-" in t for t in tars)
    assert sum(s["modalities"]["toy"] for s in manifest["splits"].values()) == 30
    assert {"train", "val", "test"} == set(manifest["splits"])  # the toy stratum is split 8:1:1

    with tarfile.open(f"{layout.version}/{tars[0]}") as tar:
        names = tar.getnames()
        first = names[0].split(".")[0]
        assert [n.split(".", 1)[1] for n in names[:3]] == ["toy", "json", "txt"]
        member = json.loads(tar.extractfile(f"{first}.json").read())
    assert set(member) == {f.name for f in Toy.member_schema()} and member["duration_s"] >= 1
    assert member["modality"] == "toy"

    stats = storage.read_json(f"{layout.version}/stats.json")
    assert stats["hours"]["toy"] > 0 and stats["dedupe"]["by_reason"] == {"duplicate:exact": 1}
    card = (tmp_path / "out" / "toys" / "versions" / "p" / "README.md").read_text()
    assert "toy-to-text" in card and "config_name: toy" in card
    croissant = storage.read_json(f"{layout.version}/croissant.json")
    assert any(s["@id"] == "toy-toy" for s in croissant["distribution"])
