"""The align step's image scoring against the model's own limit, on the same real photographs in one run
(`make bench`).

open_clip's ViT-B-32 architecture at random weights (the compute of the real model; no weights can be
fetched here), saved as a local-dir checkpoint and loaded as a recipe's `align.image_text.model` would be.
N photographs (default 5,000) of COCO's size, cropped from scikit-image's photographs (bench/clean.py).
- limit:  the model's batched forward pass alone at the same batch sizes: `encode_image` on tensors already
          preprocessed (--batch-size) and `encode_text` on the captions (one per photograph, 256 at a time as
          the stage sends them), as scoring needs both towers.
- mmetl:  the score stage (tasks/stages/score.py) over a shard of the JPEGs as clean publishes them, batch by
          batch as the engine hands them over: reading the media file, decoding, the model's preprocessing
          (on a thread, overlapped with inference), the image and text forward passes, the cosines.
Both run in one process with torch's default threads on this machine's cores, interleaved over rounds;
the ratio is taken within each round. Peak RSS is that of the process after the run.

    python bench/align.py [--n 5000] [--batch-size 64] [--rounds 2] [--out bench/out/align]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def vit_b_32(folder: Path) -> Path:
    import open_clip
    from safetensors.torch import save_file

    config = open_clip.get_model_config("ViT-B-32")
    model = open_clip.create_model("ViT-B-32")  # random weights, the real architecture
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def shard_of(images: list[bytes], folder: Path):
    """A work shard and clean's media file for it, as the engine leaves them: one row group per batch."""
    import pyarrow as pa

    from tasks.core import storage
    from tasks.core.schema import MEDIA_SCHEMA, samples_from_rows

    rows = [
        {"sample_id": f"img{i:06d}", "source": "bench", "group_id": f"img{i:06d}", "modality": "image",
         "texts": [{"text": caption(i), "kind": "caption", "source": "bench"}], "sha256": str(i)}
        for i in range(len(images))
    ]  # fmt: skip
    with storage.parquet_writer(str(folder / "shard-00000.media.parquet"), MEDIA_SCHEMA, compression="none") as out:
        for start in range(0, len(images), 256):
            part = images[start : start + 256]
            ids = [r["sample_id"] for r in rows[start : start + 256]]
            out.write_table(
                pa.table({"sample_id": ids, "media_bytes": part, "sidecars": [None] * len(part)}, MEDIA_SCHEMA)
            )
    return samples_from_rows(rows)


def run_limit(model_dir: Path, images: list[bytes], batch_size: int) -> float:
    import io

    import torch
    from PIL import Image

    from tasks.models.encoders import ImageTextEncoder

    encoder = ImageTextEncoder(str(model_dir), "cpu")
    tensors = [encoder.preprocess(Image.open(io.BytesIO(data))) for data in images]  # not timed
    captions = [caption(i) for i in range(len(images))]
    started = time.perf_counter()
    for i in range(0, len(tensors), batch_size):
        encoder.encode_images(torch.stack(tensors[i : i + batch_size]))
    for i in range(0, len(captions), TEXT_BATCH):
        encoder.encode_texts(captions[i : i + TEXT_BATCH])
    return len(tensors) / (time.perf_counter() - started)


TEXT_BATCH = 256  # texts per forward pass, as the score stage sends them


def caption(i: int) -> str:
    return f"a photograph number {i}"


def run_mmetl(model_dir: Path, shard, media_dir: Path, batch_size: int) -> float:
    from tasks.stages.score import ScoreStage

    stage = ScoreStage(image_text={"model": str(model_dir), "batch_size": batch_size}, media_dir=str(media_dir))
    stage.setup()  # once per worker, as the engine does: not timed
    started = time.perf_counter()
    stage.start_shard("shard-00000")
    for start in range(0, shard.num_rows, 256):  # the engine's batches
        kept, rejected, _ = stage.process(shard.slice(start, 256))
        assert rejected.num_rows == 0
    return shard.num_rows / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "align"))
    args = parser.parse_args()
    from bench.clean import make_images

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = vit_b_32(tmp / "vit-b-32")
        images = make_images(args.n)
        shard = shard_of(images, tmp)
        rounds = []
        for _ in range(args.rounds):
            limit = run_limit(model, images, args.batch_size)
            ours = run_mmetl(model, shard, tmp, args.batch_size)
            rounds.append({"limit": limit, "mmetl": ours, "ratio": ours / limit})
            print(json.dumps(rounds[-1]), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratios = [r["ratio"] for r in rounds]
    limit, ours = (statistics.median(r[k] for r in rounds) for k in ("limit", "mmetl"))
    lines = [
        f"# Align: ViT-B-32 image scoring, {args.n} photographs, batch {args.batch_size}, CPU",
        "",
        "| method | images/s (median of rounds) | mmetl ÷ limit |",
        "|---|---|---|",
        f"| open_clip forward alone: `encode_image` (preprocessed) + `encode_text` (limit) | {limit:.1f} | |",
        f"| mmetl score stage (read, decode, preprocess, both towers, cosines) | {ours:.1f}"
        f" | {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |",
        "",
        f"Peak RSS of the process: {peak:.0f} MB.",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
