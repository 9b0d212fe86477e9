"""Subtitles as timed texts: the cues of a WebVTT or SubRip file, each with its start and end in seconds.

A cue keeps its times (`start_s`, `end_s`) from where it is read (a downloaded `.vtt`, a `.vtt` or `.srt`
beside a video) until clean joins an item's cues into one text (`join_cues`): so a video cut into
scenes (tasks/stages/scenes.py) gives each scene the cues said during it. Times are relative to the item's
media (a window's cues are shifted to its start).
"""

from __future__ import annotations

import re

# 00:01:02.500 --> 00:01:04.000 (WebVTT; hours optional) or 00:01:02,500 --> 00:01:04,000 (SubRip)
TIMING = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})\s+-->\s+(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
TAG = re.compile(r"<[^>]+>|\{\\[^}]*\}")  # WebVTT's voice and style tags, SubRip's {\an8}
SUFFIXES = (".vtt", ".srt")


def _seconds(hours: str | None, minutes: str, seconds: str, fraction: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction.ljust(3, "0")) / 1000


def cues(subtitles: str) -> list[tuple[float, float, str]]:
    """(start_s, end_s, words) of each cue, in file order; a line repeated from the cue before is dropped
    (rolling auto-captions repeat the last line in the next cue)."""
    found, last = [], None
    timing = None
    for line in subtitles.splitlines() + [""]:
        m = TIMING.search(line)
        if m:
            g = m.groups()
            timing, words = (_seconds(*g[:4]), _seconds(*g[4:])), []
            continue
        if timing is None:
            continue
        text = TAG.sub("", line).strip()
        if text and text != last:
            words.append(text)
            last = text
        elif not text:  # a blank line ends the cue
            if words:
                found.append((*timing, " ".join(words)))
            timing = None
    return found


def timed_texts(subtitles: str, kind: str = "subtitle", window: tuple[float, float] | None = None) -> list[dict]:
    """The cues as texts of `kind` with their times; with `window` (a cut), the cues overlapping it, their times
    from its start."""
    start = window[0] if window else 0.0
    return [
        {"text": words, "kind": kind, "start_s": max(begin - start, 0.0), "end_s": end - start}
        for begin, end, words in cues(subtitles)
        if window is None or (end > window[0] and begin < window[1])
    ]


def join_cues(texts: list[dict]) -> list[dict]:
    """An item's timed texts of one kind and source joined into one text spanning them (the words in time
    order, a line repeated from the cue before once); untimed texts as they were, in place."""
    joined: dict[tuple, dict] = {}
    out: list[dict] = []
    for text in texts:
        if text.get("start_s") is None:
            out.append(text)
            continue
        key = (text["kind"], text.get("source"))
        if key not in joined:
            joined[key] = {**text, "_words": []}
            out.append(joined[key])
        whole = joined[key]
        whole["_words"].append((text["start_s"], text["text"]))
        whole["start_s"], whole["end_s"] = min(whole["start_s"], text["start_s"]), max(whole["end_s"], text["end_s"])
    for whole in joined.values():
        words = [w for _, w in sorted(whole.pop("_words"), key=lambda p: p[0])]
        whole["text"] = " ".join(w for i, w in enumerate(words) if i == 0 or w != words[i - 1])
    return out
