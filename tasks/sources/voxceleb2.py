"""VoxCeleb2: per-utterance files `txt/<speaker>/<youtube id>/<utterance>.txt` (Identity, Reference, and
the face track's FRAME rows at 25 fps). Each utterance is a clip whose text is its speaker (and its
transcript, where a `Text :` line gives one). Clips from `media_root` (`<speaker>/<youtube id>/
<utterance>.<extension>`, as VoxCeleb2 ships them), else the YouTube video cut to the frame range.
All clips of a speaker stay in one split, as VoxCeleb's own splits do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import YOUTUBE, Row, Source, clip_key

FPS = 25.0


def parse_utterance(text: str) -> dict:
    fields, frames = {}, []
    in_frames = False
    for line in text.splitlines():
        if line.startswith("FRAME"):
            in_frames = True
        elif in_frames and line.strip():
            frames.append(int(line.split()[0]))
        elif ":" in line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    return {**fields, "frames": frames}


class VoxCeleb2(Source):
    kind: Literal["voxceleb2"]
    extension: str = "mp4"  # VoxCeleb2's dev/mp4 clips; "m4a" for its aac release
    modality: Literal["video", "audio"] = "video"

    def rows(self) -> Iterator[Row]:
        fs, root, paths = self.find_files(".txt", "utterance .txt")
        for number, path in enumerate(paths):
            rel = path[len(root) + 1 :]
            try:
                utt = parse_utterance(fs.cat_file(path).decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                yield Row(number, error=f"{rel}: {e}")
                continue
            speaker, ytid = utt.get("identity"), utt.get("reference")
            if not speaker or not ytid or not utt["frames"]:
                yield Row(number, error=f"{rel}: no Identity, Reference or FRAME rows")
                continue
            texts = [{"text": speaker, "kind": "speaker"}]
            if utt.get("text"):
                texts.append({"text": utt["text"], "kind": "transcript"})
            meta = {"speaker": speaker, "youtube_id": ytid, "offset": utt.get("offset")}
            if self.media_root:
                media = rel.rsplit(".", 1)[0] + "." + self.extension
                yield Row(
                    number,
                    key=media,
                    media=self.media_uri(media),
                    modality=self.modality,
                    texts=texts,
                    group=speaker,
                    meta=meta,
                )
            else:
                start, end = utt["frames"][0] / FPS, (utt["frames"][-1] + 1) / FPS
                yield Row(
                    number,
                    key=clip_key(ytid, start, end),
                    media=YOUTUBE.format(ytid),
                    modality=self.modality,
                    texts=texts,
                    group=speaker,
                    clip=(start, end),
                    meta=meta,
                )
