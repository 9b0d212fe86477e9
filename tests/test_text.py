"""Caption cleaning, language and the text filters, on the kinds of text scraped captions carry."""

from __future__ import annotations

import pytest

from tasks.media.text import clean_text, describe, normalize_caption
from tasks.stages.clean import CleanStage
from tasks.stages.filter import FilterStage

from .helpers import image_bytes, sample, texts
from .test_stages import run


@pytest.mark.parametrize(
    "raw, cleaned, flags",
    [
        ("<p>A dog &amp; a <b>cat</b></p>", "A dog & a cat", ["markup"]),
        ("CafÃ© on the corner", "Café on the corner", ["repaired"]),  # UTF-8 read as Latin-1 (mojibake)
        ("ｆｕｌｌ-width ﬁsh", "full-width fish", []),  # NFKC: full-width letters, the fi ligature
        ("a\tdog\x00 on\u200b the\n\nbeach ", "a dog on the beach", []),  # controls and format chars: spaces
        ("mail me at jo.doe+x@example.co.uk today", "mail me at [email] today", ["email"]),
        ("see https://example.com/a?b=1 for more", "see [url] for more", ["url"]),
        ("call +1 (555) 010-9999 now", "call [phone] now", ["phone"]),
        ("a red bus with route 42 on a street", "a red bus with route 42 on a street", []),  # numbers are not phones
        ("Image may contain: one or more people", "Image may contain: one or more people", ["boilerplate"]),
        ("IMG_20190612_101500.jpg", "IMG_20190612_101500.jpg", ["boilerplate"]),
        ("DSC0042", "DSC0042", ["boilerplate"]),
        ("stock photo", "stock photo", ["boilerplate"]),
        ("www.example.com", "[url]", ["url", "boilerplate"]),
        ("a photo of a dog catching a frisbee in a park", "a photo of a dog catching a frisbee in a park", []),
        ("the recording speech.wav", "the recording speech.wav", []),  # names a file, says more
        ("<br/>", "", ["markup"]),
    ],
)
def test_clean_text_repairs_masks_and_flags(raw, cleaned, flags):
    assert clean_text(raw) == (cleaned, flags)


def test_printable_ascii_is_what_ftfy_and_unicode_normalization_leave_it():
    """clean_text and normalize_caption skip ftfy and NFKC/NFC for printable ASCII: it must be a no-op."""
    import random
    import unicodedata

    import ftfy

    rng = random.Random(5)
    printable = [chr(c) for c in range(0x20, 0x7F)]
    texts = ["".join(rng.choice(printable) for _ in range(rng.randint(1, 80))) for _ in range(3000)]
    texts += ["a  dog ", "&amp; &#233;", "\\x1b[31m red", "A&lt;B", "It's 5 o'clock -- \"quoted\"", "C:\\dir\\a.jpg"]
    for text in texts:
        assert ftfy.fix_text(text, normalization="NFKC", unescape_html=False) == text
        assert unicodedata.normalize("NFKC", text) == text and all(unicodedata.category(c)[0] != "C" for c in text)
        assert normalize_caption(text) == " ".join(text.split())


def test_pii_can_be_flagged_without_masking_or_left_alone():
    assert clean_text("write to a@b.org", pii="flag") == ("write to a@b.org", ["email"])
    assert clean_text("write to a@b.org", pii="keep") == ("write to a@b.org", [])


@pytest.mark.parametrize(
    "text, lang",
    [
        ("Two people ride bicycles through a busy city street at night", "en"),
        ("Ein brauner Hund läuft bei Sonnenuntergang am Strand entlang", "de"),
        ("Un chien brun court sur la plage au coucher du soleil", "fr"),
        ("Un perro marrón corre por la playa al atardecer", "es"),
        ("Коричневая собака бежит по песчаному пляжу на закате солнца и лает", "ru"),
        ("夕暮れの浜辺を茶色い犬が走っている", "ja"),
    ],
)
def test_language_is_identified_offline_with_its_confidence(text, lang):
    described = describe(text)
    assert described["lang"] == lang and described["lang_score"] > 0.5
    assert described["words"] == len(text.split()) and described["chars"] == len(text)


def test_a_short_caption_gets_a_low_confidence():
    assert describe("a dog")["lang_score"] < 0.5


def test_clean_keeps_texts_cleaned_and_described_and_rejects_an_item_of_only_markup_or_space():
    stage = CleanStage()
    kept, rejected = run(
        stage,
        sample(captions=("<i>A dog</i> on a beach", "A dog on a beach", "   "), media=image_bytes(), n=0),
        sample(captions=("<br/>", " \t "), media=image_bytes(), n=1),
    )
    assert [r["reason"] for r in rejected] == ["text:empty"]
    (item,) = kept
    (text,) = item["texts"]  # the markup-free repeat and the blank one are dropped
    assert text["text"] == "A dog on a beach" and text["flags"] == ["markup"] and text["lang"] == "en"


def test_text_filters_drop_other_languages_when_sure_and_boilerplate_and_keep_the_rest():
    stage = FilterStage(languages=("en",), language_min_score=0.5, min_caption_words=1)

    def described(*captions):
        return [{**t, **describe(t["text"]), "flags": clean_text(t["text"])[1]} for t in texts(*captions)]

    rows = [
        {
            **sample(n=0, width=64, height=64),
            "texts": described(
                "Two people ride bicycles through a busy city street at night",
                "Zwei Menschen fahren nachts mit dem Fahrrad durch eine belebte Straße",
                "a dog",  # too short to be sure of: kept
                "IMG_0042.jpg",
            ),
        },
        {**sample(n=1, width=64, height=64), "texts": described("stock photo")},
    ]
    kept, rejected, dropped = run(stage, *rows, with_dropped_texts=True)
    assert [t["text"] for t in kept[0]["texts"]] == [
        "Two people ride bicycles through a busy city street at night",
        "a dog",
    ]
    assert sorted(d["reason"] for d in dropped) == ["filter:boilerplate", "filter:language"]
    assert [r["reason"] for r in rejected] == ["filter:boilerplate"]


def tiny_wordpiece(path, captions: list[str]) -> str:
    """A WordPiece tokenizer trained here on a few captions (no hub is reachable): BERT's recipe in small."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(
        captions,
        trainers.WordPieceTrainer(vocab_size=400, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]),
    )
    tokenizer.save(str(path))
    return str(path)


def test_clean_tokenizes_each_text_with_the_recipes_tokenizer_and_truncates(tmp_path):
    from tokenizers import Tokenizer

    captions = [
        "A brown dog runs along the beach at sunset",
        "Two people ride bicycles through a busy street",
        "A cat sleeps on the sofa next to a window",
    ]
    path = tiny_wordpiece(tmp_path / "tokenizer.json", captions)
    stage = CleanStage(features={"tokenize": {"tokenizer": path, "max_length": 6}})
    stage.setup()
    kept, rejected = run(stage, sample(captions=(captions[0], "A dog runs"), media=image_bytes(), n=0))
    long, short = kept[0]["texts"]
    assert long["n_tokens"] == 9 and len(long["tokens"]) == 6  # truncated to max_length, the length kept
    assert Tokenizer.from_file(path).decode(short["tokens"]) == "a dog runs" and short["n_tokens"] == 3


def test_a_recipe_naming_a_missing_tokenizer_is_refused_with_the_key(tmp_path):
    from tasks.recipe import RecipeError, load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\nsource: {name: s, kind: manifest, uri: x.jsonl}\n"
        "features: {tokenize: {tokenizer: /nowhere/tokenizer.json}}\n"
    )
    with pytest.raises(RecipeError, match=r"features\.tokenize: .*no tokenizer file at /nowhere/tokenizer.json"):
        load_recipe(recipe)


def test_the_license_allowlist_rejects_items_whose_source_states_another_license():
    import json

    def item(n, license):
        meta = json.dumps({"LICENSE": license}) if license else None
        return {**sample(n=n, width=64, height=64), "meta": meta, "texts": texts("a dog runs on the beach")}

    rows = [item(0, "CC-BY"), item(1, "cc-by-nc-nd"), item(2, None)]
    kept, rejected = run(FilterStage(licenses=("cc-by", "cc0")), *rows)
    assert [r["sample_id"] for r in kept] == [rows[0]["sample_id"], rows[2]["sample_id"]]
    assert [(r["reason"], r["detail"]) for r in rejected] == [
        ("filter:license", "license 'cc-by-nc-nd' is not allowed")
    ]
    kept, rejected = run(FilterStage(licenses=("cc-by",), require_license=True), *rows)
    assert [r["detail"] for r in rejected] == ["license 'cc-by-nc-nd' is not allowed", "no license stated"]
