"""Text in pictures on real photographs and on pictures with text rendered at several sizes (Pillow and
Debian's DejaVu font, installed by `make system`): the text area follows the text's coverage, the words
are read, photographs without text (and round things the detector mistakes for letters) measure none,
and the filter, a video's keyframes and the recipe's checks."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from tasks.media.ocr import read_image, read_picture
from tasks.recipe import Recipe
from tasks.stages.clean import CleanStage
from tasks.stages.filter import FilterStage

from .helpers import sample
from .realmedia import skimage_photos
from .test_stages import run
from .test_video import slideshow

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field", "retina", "clock")


def with_text(photo: np.ndarray, lines: list[str], size: int, panel: bool = False) -> tuple[np.ndarray, float]:
    """`lines` drawn on a 640 x 480 copy of `photo` at `size` px (white with a black outline, on a white panel
    as a slide has with `panel`), and the share of the picture inside the lines' boxes."""
    picture = Image.fromarray(photo).convert("RGB").resize((640, 480))
    draw, font = ImageDraw.Draw(picture), ImageFont.truetype(FONT, size)
    covered = np.zeros((480, 640), bool)
    if panel:
        draw.rectangle((20, 20, 620, 460), fill="white")
    y = 30
    for line in lines:
        box = draw.textbbox((30, y), line, font=font, stroke_width=0 if panel else 2)
        draw.text((30, y), line, font=font, fill="black" if panel else "white",
                  stroke_width=0 if panel else 2, stroke_fill="black")  # fmt: skip
        covered[box[1] : box[3], box[0] : box[2]] = True
        y = box[3] + size // 2
    return np.asarray(picture), float(covered.mean())


def jpeg(picture: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def letters(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


CAPTION = ["golden hour"]
POSTER = ["SUMMER SALE", "fifty percent off", "this weekend only"]
SLIDE = ["Region segmentation", "markers of the coins", "and the background", "found at the two",
         "extreme parts of the", "histogram of grey values", "then a watershed"]  # fmt: skip


@pytest.fixture(scope="module")
def photos():
    return skimage_photos(PHOTOS)


def test_the_text_area_follows_the_texts_coverage_and_the_words_are_read(photos):
    """On three photographs each: a caption in a corner, a poster's three lines, a slide of seven. The area
    is ordered as the truth and within a factor of it (the detector's boxes are a little wider than the
    letters'); each word is read (spaces aside: the recogniser sometimes runs two words together)."""
    for name in ("astronaut", "chelsea", "rocket"):
        made = [with_text(photos[name], CAPTION, 28), with_text(photos[name], POSTER, 56),
                with_text(photos[name], SLIDE, 40, panel=True)]  # fmt: skip
        readings = [read_picture(picture, "read") for picture, _ in made]
        truth, measured = [t for _, t in made], [r.text_area for r in readings]
        assert measured == sorted(measured) and truth == sorted(truth), (name, truth, measured)
        assert all(0.6 * t < m < 2.5 * t for t, m in zip(truth, measured)), (name, truth, measured)
        for reading, lines in zip(readings, (CAPTION, POSTER, SLIDE)):
            for word in " ".join(lines).split():
                assert letters(word) in letters(reading.text), (name, word, reading.lines)


def test_photographs_without_text_measure_none(photos):
    """Real photographs, among them the round things the detector boxes whole and reads as "8" or "O" (a
    coffee cup, a retina, a clock face): no text, and nothing read. scikit-image's scan of a printed page
    measures as the text it is."""
    from skimage import data

    for name, photo in photos.items():
        reading = read_picture(photo, "read")
        assert reading.text_area < 0.02 and not reading.lines, (name, reading)
    page = read_picture(np.stack([data.page()] * 3, axis=-1), "read")
    assert page.text_area > 0.3 and "segmentation" in page.text.lower(), page


def test_clean_reads_the_picture_and_the_filter_rejects_text_heavy_ones(photos):
    poster, _ = with_text(photos["chelsea"], POSTER, 56)
    items = [sample("image", media=jpeg(poster), n=0), sample("image", media=jpeg(photos["coins"]), n=1)]
    kept, rejected = run(CleanStage(image={"ocr": "read"}, pii="mask"), *items)
    assert not rejected
    read = [t for t in kept[0]["texts"] if t["kind"] == "ocr"]
    assert len(read) == 1 and read[0]["source"] == "t" and "fifty" in read[0]["text"].lower(), kept[0]["texts"]
    assert read[0]["lang"] is not None  # described as every text is
    assert [t["kind"] for t in kept[1]["texts"]] == ["caption"]  # nothing read in the coins
    areas = [{s["name"]: s["value"] for s in r["scores"]}["text_area"] for r in kept]
    assert areas[0] > 0.1 and areas[1] == 0.0, areas
    filtered, rejected = run(FilterStage(max_text_area=0.1), *kept)
    assert [r["sample_id"] for r in filtered] == [items[1]["sample_id"]]
    assert rejected[0]["reason"] == "filter:text_heavy" and "text_area=" in rejected[0]["detail"]
    # an ocr text is not a caption: a short one is not dropped for its length
    short, rejected = run(FilterStage(min_caption_words=50), kept[0])
    assert not rejected and [t["kind"] for t in short[0]["texts"]] == ["ocr"]

    detected, _ = run(CleanStage(image={"ocr": "detect"}), items[0])
    assert [t["kind"] for t in detected[0]["texts"]] == ["caption"]  # detect measures, reads nothing
    assert {s["name"]: s["value"] for s in detected[0]["scores"]}["text_area"] == pytest.approx(areas[0])


def test_a_videos_keyframes_are_read_and_a_title_card_alone_is_not_text_heavy(photos):
    slides = [with_text(photos["astronaut"], SLIDE, 40, panel=True)[0], with_text(photos["rocket"], POSTER, 56)[0]]
    lecture = slideshow(slides, (320, 240), seconds_each=2.0, fps=10)
    stills = [photos[name] for name in ("chelsea", "coffee", "camera", "coins")]
    titled = slideshow([slides[0], *stills], (320, 240), seconds_each=1.0, fps=10)  # a title card, then footage
    items = [sample("video", media=lecture, n=0), sample("video", media=titled, n=1)]
    kept, rejected = run(CleanStage(video={"ocr": "read"}, features={"keyframes": {"count": 5}}), *items)
    assert not rejected
    areas = [{s["name"]: s["value"] for s in r["scores"]}["text_area"] for r in kept]
    assert areas[0] > 0.15 and areas[1] < 0.05, areas
    read = " ".join(t["text"] for t in kept[0]["texts"] if t["kind"] == "ocr").lower()
    assert "summer" in read and "histogram" in read, read


def test_the_recipe_refuses_a_text_area_bound_without_the_measure():
    source = {"name": "s", "kind": "manifest", "uri": "x.jsonl"}
    with pytest.raises(ValueError, match=r"filter.max_text_area judges the text_area score: set clean.image.ocr"):
        Recipe.model_validate({"name": "t", "source": source, "filter": {"max_text_area": 0.3}})
    with pytest.raises(ValueError, match="clean.video.ocr reads the keyframes: set features.keyframes"):
        Recipe.model_validate({"name": "t", "source": source, "clean": {"video": {"ocr": "detect"}}})
    Recipe.model_validate({"name": "t", "source": source, "clean": {"image": {"ocr": "detect"}},
                           "filter": {"max_text_area": 0.3}})  # fmt: skip
    assert read_image(jpeg(np.zeros((40, 40, 3), np.uint8)), "detect").text_area == 0.0
