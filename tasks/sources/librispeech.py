"""LibriSpeech (`<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac`, with each chapter's
`<speaker>-<chapter>.trans.txt`: one "<utterance id> <TRANSCRIPT>" a line): one audio item per
utterance with its transcript. `uri` is the corpus root or one subset; `media_root`, when given, is
where the same tree of .flac files is. A speaker stays in one split, as in LibriSpeech's own subsets;
SPEAKERS.TXT, where it sits at or above `uri`, adds each speaker's sex and subset to the meta."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Literal

from .base import Row, Source, caption


class LibriSpeech(Source):
    kind: Literal["librispeech"]
    extension: str = "flac"

    def rows(self) -> Iterator[Row]:
        fs, root, paths = self.find_files(".trans.txt", "<speaker>-<chapter>.trans.txt")
        speakers = self._speakers(fs, root)
        number = 0
        for path in paths:
            folder = posixpath.dirname(path)[len(root) + 1 :]
            for line in fs.cat_file(path).decode("utf-8", errors="replace").splitlines():
                utt, _, text = line.strip().partition(" ")
                parts = utt.split("-")
                if not line.strip():
                    continue
                if len(parts) != 3 or not text.strip():
                    yield Row(number, texts=caption(text or None, "transcript"), error=f"{path}: bad line {line!r}")
                else:
                    rel = posixpath.join(folder, f"{utt}.{self.extension}")
                    media = self.media_uri(rel) if self.media_root else f"{self.uri.rstrip('/')}/{rel}"
                    speaker = parts[0]
                    yield Row(
                        number,
                        key=rel,
                        media=media,
                        modality="audio",
                        texts=caption(text.strip(), "transcript"),
                        group=f"speaker:{speaker}",
                        meta={"speaker": speaker, "chapter": parts[1], **speakers.get(speaker, {})},
                    )
                number += 1

    def _speakers(self, fs, root: str) -> dict[str, dict]:
        """SPEAKERS.TXT ("ID | SEX | SUBSET | MINUTES | NAME", ';' comments), looked for at `uri` and two up."""
        for folder in (root, posixpath.dirname(root), posixpath.dirname(posixpath.dirname(root))):
            path = posixpath.join(folder, "SPEAKERS.TXT")
            if fs.exists(path):
                out = {}
                for line in fs.cat_file(path).decode("utf-8", errors="replace").splitlines():
                    cells = [c.strip() for c in line.split("|")]
                    if line.startswith(";") or len(cells) < 3:
                        continue
                    out[cells[0]] = {"sex": cells[1], "subset": cells[2]}
                return out
        return {}
