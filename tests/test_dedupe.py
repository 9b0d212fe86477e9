"""Near-duplicates on real photographs: planted copies (re-encodes, half-size, 2% crops, PNG/WebP,
brighter, a caption burnt in) are found and become one item; distinct photographs never merge."""

from __future__ import annotations

import io
import itertools
import json
import random

import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from tasks import storage
from tasks.groups import UnionFind
from tasks.recipe import Recipe
from tasks.similar import caption_pairs, hamming_pairs
from tasks.sources import make_source

from .helpers import build_in_process

DISTINCT = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry",
            "camera", "moon", "coins", "page", "text")


def _save(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _crop(image: Image.Image, fraction: float) -> Image.Image:
    dx, dy = int(image.width * fraction), int(image.height * fraction)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def _caption_burnt_in(image: Image.Image) -> Image.Image:
    image = image.copy()
    ImageDraw.Draw(image).text((8, image.height - 18), "(c) stock", fill=(255, 255, 255))
    return image


EDITS = {
    "jpeg70": lambda im: _save(im, quality=70),
    "half": lambda im: _save(im.resize((im.width // 2, im.height // 2)), quality=90),
    "crop2": lambda im: _save(_crop(im, 0.02), quality=90),
    "png": lambda im: _save(im, "PNG"),
    "webp": lambda im: _save(im, "WEBP", quality=80),
    "brighter": lambda im: _save(ImageEnhance.Brightness(im).enhance(1.2), quality=90),
    "overlay": lambda im: _save(_caption_burnt_in(im), quality=90),
}


def photographs() -> dict[str, Image.Image]:
    """48 distinct pictures: 12 real photographs, each also turned by 90, 180, 270 degrees."""
    from skimage import data

    pictures = {}
    for name in DISTINCT:
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        for turn in range(4):
            pictures[f"{name}-{90 * turn}"] = photo.rotate(90 * turn, expand=True)
    return pictures


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A build over the distinct photographs and a planted copy of each edit for 12 of them."""
    folder = tmp_path_factory.mktemp("planted")
    pictures = photographs()
    rows, family = [], {}
    for name, picture in pictures.items():
        media = f"{name}.jpg"
        storage.write_bytes(str(folder / media), _save(picture, quality=92))
        rows.append({"media": media, "modality": "image", "text": f"the original {name}"})
        family[media] = name
    for name in (f"{n}-0" for n in DISTINCT):
        for edit, make in EDITS.items():
            media = f"{name}.{edit}.img"
            storage.write_bytes(str(folder / media), make(pictures[name]))
            rows.append({"media": media, "modality": "image", "text": f"{edit} copy of {name}"})
            family[media] = name
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(name="photos", kind="manifest", uri=str(folder / "captions.jsonl"))
    layout, manifest = build_in_process([source], str(folder / "out"), Recipe(name="t", sources=(source,)))
    index = [row for split in manifest["splits"] for row in
             pq.read_table(storage.join(layout.version, f"{split}/index.parquet")).to_pylist()]
    rejects = pq.read_table(storage.join(layout.version, "rejects.parquet")).to_pylist()
    return {"family": family, "index": index, "rejects": rejects, "rows": rows}


def _media(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def test_every_planted_copy_is_found_and_no_two_photographs_merge(planted):
    family = planted["family"]
    published = {_media(r["source_uri"]): r for r in planted["index"]}
    # one item per picture: every one of the 48 distinct pictures survives, no copy does
    assert sorted(family[m] for m in published) == sorted(set(family.values()))
    copies = {_media(r["source_uri"]): r for r in planted["rejects"]}
    assert len(copies) == len(DISTINCT) * len(EDITS)
    by_id = {r["sample_id"]: _media(r["source_uri"]) for r in planted["index"]}
    for media, reject in copies.items():
        assert reject["reason"] in ("duplicate:near", "duplicate:exact"), (media, reject["reason"])
        assert family[by_id[reject["duplicate_of"]]] == family[media], f"{media} merged into another picture"
        assert reject["reason"] == "duplicate:exact" or "pHash" in reject["detail"]


def test_the_kept_item_is_the_largest_and_carries_every_copys_text(planted):
    for item in planted["index"]:
        name = item["source_uri"].rsplit("/", 1)[-1].split(".")[0]
        texts = sorted(t["text"] for t in item["texts"])
        if name.endswith("-0"):  # a planted family: 8 captions, on the full-size picture
            assert texts == sorted([f"the original {name}"] + [f"{e} copy of {name}" for e in EDITS])
            assert (item["width"], item["height"]) == photographs()[name].size
        else:
            assert texts == [f"the original {name}"]


def test_hamming_pairs_find_what_a_full_comparison_finds():
    rng = random.Random(7)
    hashes = [rng.getrandbits(64) for _ in range(1500)]
    for h in list(hashes[:300]):
        for bit in rng.sample(range(64), rng.randint(0, 10)):
            h ^= 1 << bit
        hashes.append(h)
    hashes += [hashes[5]] * 40  # a flood of one hash (blank images): collapsed, not a 40-clique
    ids = [f"{i:05d}" for i in range(len(hashes))]
    found = hamming_pairs(ids, hashes, radius=8)
    assert len(found) < 400
    assert all(bin(hashes[int(a)] ^ hashes[int(b)]).count("1") == d <= 8 for a, b, d in found)

    def clusters(pairs):
        union = UnionFind()
        for a, b in pairs:
            union.union(a, b)
        return {i: union.find(i) for i in ids}

    brute = [(a, b) for (a, x), (b, y) in itertools.combinations(zip(ids, hashes), 2) if bin(x ^ y).count("1") <= 8]
    assert clusters([(a, b) for a, b, _ in found]) == clusters(brute)


def test_near_duplicate_captions_are_paired_and_unrelated_ones_are_not():
    texts = {"a": "A brown dog runs along the beach at sunset with a red ball",
             "b": "a brown dog runs along the beach at sunset with a red ball!",  # punctuation and case
             "c": "A brown dog runs along the beach at sunset with a blue ball",  # one word changed
             "d": "Two people ride bicycles through a busy city street at night",
             "e": "A brown cat sleeps on the sofa next to a window in the sun"}
    pairs = {(a, b) for a, b, _ in caption_pairs(list(texts), list(texts.values()), threshold=0.5)}
    assert pairs == {("a", "b"), ("a", "c")}  # b is a once normalized: c pairs with the first of them
