"""Caption text: cleaning, language and counts (clean), and the normalization dedupe and filter share.

`clean_text` repairs what scraped and exported captions carry: HTML tags and entities, mojibake and
other broken Unicode (ftfy), compatibility forms (NFKC: full-width letters, ligatures), control
characters and runs of whitespace. Emails, URLs and phone numbers are masked (`[email]`, `[url]`,
`[phone]`) or only flagged, per recipe; captions that say nothing about the media ("image may
contain", a file name, a bare URL, "stock photo") are flagged `boilerplate`. `describe` adds the
language (py3langid: its model ships in the wheel, so it works offline) with its confidence, and
word and character counts. Flags and language are kept on each text; filters decide on them.
"""

from __future__ import annotations

import html
import re
import unicodedata
from functools import cache
from pathlib import Path

import ftfy
from pydantic import Field, model_validator

from ..core.settings import Strict
from .subtitles import join_cues


class TokenizeConfig(Strict):
    tokenizer: str  # a local tokenizer.json (Hugging Face `tokenizers`: BERT's, CLIP's, your own)
    max_length: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _exists(self):
        if not Path(self.tokenizer).is_file():
            raise ValueError(f"no tokenizer file at {self.tokenizer}")
        return self


_SPACE = re.compile(r"\s+")
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<!--.*?-->", re.S)
PII = {  # flag -> pattern; order matters: a URL may contain an address, a phone number digits of a URL
    "url": re.compile(r"\b(?:https?://|www\.)[^\s<>\"]+", re.I),
    "email": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    "phone": re.compile(r"(?<![\w+])\+?\d[\d\s().-]{7,}\d\b"),
}
BOILERPLATE = [
    re.compile(p, re.I)
    for p in (
        r"^image may contain\b",
        r"^(?:no )?(?:description|caption|alt text|title)(?: available| here)?$",
        r"^(?:stock )?(?:photo|image|picture|img|thumbnail|untitled|placeholder)s?(?: \d+)?$",
        r"^[\w\-.]+\.(?:jpe?g|png|gif|webp|bmp|tiff?|mp[34]|wav|flac|mov|avi|mkv)$",  # a file name, nothing else
        r"^(?:img|dsc|dscn|pxl|vid|mvi)[_\- ]?\d+$",  # a camera's file stem
        r"^\[url\]$",  # nothing but a link
    )
]


def clean_text(raw: str | None, pii: str = "mask") -> tuple[str, list[str]]:
    """The cleaned caption and its flags (markup, repaired, url/email/phone, boilerplate).
    pii: "mask" replaces what it finds, "flag" only notes it, "keep" does neither."""
    if not raw:
        return "", []
    flags = []
    text = _TAG.sub(" ", raw)
    if text != raw:
        flags.append("markup")
    text = html.unescape(text)
    if _plain(text):  # nothing for ftfy or NFKC to change (most English captions): skip their passes
        text = normalize_caption(text)
    else:
        fixed = normalize_caption(ftfy.fix_text(text, normalization="NFKC", unescape_html=False))
        if fixed != normalize_caption(unicodedata.normalize("NFKC", text)):
            flags.append("repaired")
        text = fixed
    if pii != "keep":
        for name, pattern in PII.items():
            if pattern.search(text):
                flags.append(name)
                if pii == "mask":
                    text = pattern.sub(f"[{name}]", text)
    if any(p.search(text) for p in BOILERPLATE):
        flags.append("boilerplate")
    return text, flags


def normalize_caption(text: str | None) -> str:
    """NFC, no control characters, single spaces, trimmed."""
    if not text:
        return ""
    if _plain(text):
        return _SPACE.sub(" ", text).strip()
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return _SPACE.sub(" ", text).strip()


def _plain(text: str) -> bool:
    """Printable ASCII: no mojibake, width or compatibility form, control character or line break, so
    ftfy, NFKC and NFC leave it as it is (tests/test_text.py checks it against them)."""
    return text.isascii() and text.isprintable()


@cache
def load_language_model():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def describe(text: str) -> dict:
    """Language (ISO 639-1) with the identifier's probability, and word and character counts. Short
    captions get low confidence ("a dog": 0.06): filters trust the language only above a threshold."""
    lang, score = load_language_model().classify(text)
    return {"lang": lang, "lang_score": round(float(score), 4), "words": len(text.split()), "chars": len(text)}


class Tokenize:
    """A Hugging Face `tokenizers` tokenizer (a tokenizer.json, e.g. BERT's) over texts: ids cut at
    max_length, and the uncut length, so what truncation drops is visible."""

    def __init__(self, tokenizer: str, max_length: int):
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(tokenizer)
        except Exception as e:  # a missing file and a malformed one read alike to the user
            raise ValueError(f"features.tokenize.tokenizer: cannot load {tokenizer}: {e}") from None
        self.tokenizer.no_truncation()
        self.max_length = max_length

    def __call__(self, texts: list[dict]) -> list[dict]:
        encoded = self.tokenizer.encode_batch([t["text"] for t in texts]) if texts else []
        return [{**t, "tokens": e.ids[: self.max_length], "n_tokens": len(e.ids)} for t, e in zip(texts, encoded)]


def word_count(text: str | None) -> int:
    return len(normalize_caption(text).split())


def clean_texts(texts: list[dict], pii: str = "mask") -> tuple[list[dict], list[tuple[dict, str]]]:
    """An item's texts cleaned and described, without empty ones and repeats; (kept, [(dropped, reason)]). Timed
    texts (subtitle cues) are joined first into one text per kind and source; flags a text came with stay."""
    cleaned = []
    for text in join_cues(texts):
        value, flags = clean_text(text["text"], pii)
        cleaned.append((text, {**text, "text": value, "flags": list(dict.fromkeys((text.get("flags") or []) + flags))}))
    kept, dropped = unique_texts([c for _, c in cleaned])
    originals = {id(c): t for t, c in cleaned}
    return ([{**t, **describe(t["text"])} for t in kept], [(originals[id(t)], reason) for t, reason in dropped])


def unique_texts(texts: list[dict]) -> tuple[list[dict], list[tuple[dict, str]]]:
    """An item's texts normalized, without empty ones and repeats (same kind, and the same caption up
    to case and spacing); returns (kept, [(dropped text, reason)])."""
    kept, dropped, seen = [], [], set()
    for text in texts:
        clean = normalize_caption(text["text"])
        key = (text["kind"], clean.casefold())
        if not clean:
            dropped.append((text, "text:empty"))
        elif key in seen:
            dropped.append((text, "text:duplicate"))
        else:
            seen.add(key)
            kept.append({**text, "text": clean})
    return kept, dropped
