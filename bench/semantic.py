"""Semantic dedupe and generated captions, against the plain limit on the same inputs (`make bench`; one process
each, so each has its own peak memory).

Semantic dedupe (tasks/similar/semantic.nearest_better: faiss k-means, k = √N, then each item's most similar
better-ranked member of its cluster), on N L2-normalised 512-d float16 embeddings (default 1,000,000, CLIP
ViT-B/32's width): items scattered around 2,000 topics (cosine ~0.5 to their topic, ~0.25 to each other), 5%
of them near copies of another item (cosine ~0.98). Reported: seconds (k-means, in-cluster search), peak RSS,
the planted copies found at ε = 0.05, and the other items wrongly found. Beside it, on the first M (default
50,000) of the same embeddings:
- semantic:   the same call on M.
- exact:      faiss's exact search (IndexFlatIP, every item against every other, k = 2): what a user would run
              to find each item's nearest neighbour without clustering; ours is scored by the share of the
              pairs at cosine ≥ 0.95 exact search finds that it finds too.

Generated captions, on N real-photo JPEGs of COCO's size (default 48; bench/clean.py's) and a BLIP model of
BLIP-base's shape (ViT-B/16 at 384 px, a BERT-base decoder) with random weights, 20 new tokens each, batches of
8, on this machine's CPU (a GPU where one is lent):
- caption-stage: tasks/stages/caption.CaptionStage over the images as clean stores them (its media file):
                 read, decode, the processor, `generate`, the text clean.
- generate:      the bare `model.generate` on the same batches, the processor's tensors made beforehand.
Reported: images/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.clean import median_range, one_process  # noqa: E402  (after the path is set)

DIM, TOPICS, COPIES, EPSILON = 512, 2000, 0.05, 0.05
CAPTION_BATCH, NEW_TOKENS = 8, 20


def embeddings(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n float16 unit vectors around TOPICS topics, the last COPIES of them near copies of earlier ones; and
    for each copy, the row it copies (-1 for the others)."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(TOPICS, DIM)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    out, copied = np.empty((n, DIM), np.float16), np.full(n, -1, np.int64)
    originals = n - int(n * COPIES)
    copied[originals:] = rng.integers(0, originals, n - originals)
    for first, last in ((0, originals), (originals, n)):  # the originals, then their copies
        for start in range(first, last, 65536):  # float32 a chunk at a time: the matrix itself stays float16
            rows = np.arange(start, min(start + 65536, last))
            if first == 0:  # a topic plus noise
                x = topics[rng.integers(0, TOPICS, len(rows))] + rng.normal(scale=0.0765, size=(len(rows), DIM))
            else:  # a copy: its original plus a little noise
                x = out[copied[rows]].astype(np.float32) + rng.normal(scale=0.009, size=(len(rows), DIM))
            out[rows] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, copied


def run_semantic(n: int) -> dict:
    from tasks.similar import semantic

    vectors, copied = embeddings(n)
    rank = np.arange(n)  # originals first: a copy's better member is its original
    started = time.perf_counter()
    labels = semantic.cluster_labels(vectors, round(math.sqrt(n)))
    clustered = time.perf_counter()
    _, cosine = semantic.nearest_better(vectors, rank, labels=labels)
    total = time.perf_counter() - started
    found = cosine >= 1 - EPSILON
    planted = copied >= 0
    return {
        "n": n,
        "kmeans_s": clustered - started,
        "total_s": total,
        "clusters": int(labels.max() + 1),
        "planted_found": float((found & planted).sum() / max(planted.sum(), 1)),
        "others_found": int((found & ~planted).sum()),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def run_exact(n: int) -> dict:
    import faiss

    from tasks.similar import semantic

    vectors, _ = embeddings(1_000_000 if n > 1_000_000 else max(n, 1))
    vectors = np.ascontiguousarray(vectors[:n], dtype=np.float32)
    started = time.perf_counter()
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    sims, ids = index.search(vectors, 2)
    exact_s = time.perf_counter() - started
    _, cosine = semantic.nearest_better(vectors.astype(np.float16), np.arange(n))
    # pairs exact search finds at cosine ≥ 1 − ε (each item's nearest other); found by ours when that item, or
    # its neighbour, has a better member that near
    near = sims[:, 1] >= 1 - EPSILON
    ours = cosine >= 1 - EPSILON
    caught = ours | ours[ids[:, 1]]
    return {
        "n": n,
        "exact_s": exact_s,
        "exact_pairs": int(near.sum()),
        "recall_of_exact": float((caught & near).sum() / max(near.sum(), 1)),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def blip_base(folder: Path) -> Path:
    """BLIP-base's shape with random weights (BlipConfig's defaults), and its processor over a word tokenizer."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    from tests.tinymodels import WORDS, word_tokenizer

    tokenizer = word_tokenizer(folder, WORDS * 1, 512)
    config = BlipConfig(
        text_config={"vocab_size": len(tokenizer), "bos_token_id": 2, "sep_token_id": 3, "pad_token_id": 0}
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def run_captions(method: str, n: int) -> dict:
    import pyarrow as pa

    from bench.clean import make_images
    from tasks.core import storage
    from tasks.core.schema import MEDIA_SCHEMA, SAMPLE_SCHEMA, table_of
    from tasks.models.captioner import Captioner
    from tasks.stages.caption import CaptionStage

    images = make_images(n)
    work = Path(tempfile.mkdtemp())
    folder = blip_base(work / "blip-base")
    rows = [{"sample_id": f"{i:06d}", "source": "s", "group_id": f"{i}", "modality": "image", "sha256": "0",
             "texts": []} for i in range(n)]  # fmt: skip
    if method == "generate":
        model = Captioner(str(folder), "auto", "", NEW_TOKENS)
        import io

        from PIL import Image

        batches = [
            model.inputs([Image.open(io.BytesIO(b)).convert("RGB") for b in images[i : i + CAPTION_BATCH]])
            for i in range(0, n, CAPTION_BATCH)
        ]
        started = time.perf_counter()
        for inputs in batches:
            model.generate(inputs)
        seconds = time.perf_counter() - started
    else:
        media = table_of([{"sample_id": r["sample_id"], "media_bytes": b} for r, b in zip(rows, images)], MEDIA_SCHEMA)
        storage.write_parquet(str(work / "shard-00000.media.parquet"), media)
        stage = CaptionStage(
            model=str(folder), media_dir=str(work), max_new_tokens=NEW_TOKENS, batch_size=CAPTION_BATCH
        )
        stage.setup()
        stage.start_shard("shard-00000")
        started = time.perf_counter()
        kept, _, _ = stage.process(pa.Table.from_pylist(rows, SAMPLE_SCHEMA))
        seconds = time.perf_counter() - started
        assert all(t["kind"] == "synthetic" for r in kept.to_pylist() for t in r["texts"])
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"n": n, "seconds": seconds, "images_per_s": n / seconds, "device": device,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--compare", type=int, default=50_000)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "semantic"))
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, n = args.one[0], int(args.one[1])
        work = {"semantic": run_semantic, "exact": run_exact}
        print(json.dumps(work[method](n) if method in work else run_captions(method, n)))
        return 0
    script = str(Path(__file__).resolve())
    results: dict[str, list[dict]] = {}
    for _ in range(args.rounds):  # rounds interleave the methods, so a slow minute hits each alike
        for method, n in (("semantic", args.items), ("semantic", args.compare), ("exact", args.compare),
                          ("caption-stage", args.images), ("generate", args.images)):  # fmt: skip
            results.setdefault(f"{method}-{n}", []).append(one_process(script, method, n))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text(report(results, args))
    print((out / "report.md").read_text())
    return 0


def report(results: dict, args) -> str:
    big, small = results[f"semantic-{args.items}"], results[f"semantic-{args.compare}"]
    exact = results[f"exact-{args.compare}"]
    stage, bare = results[f"caption-stage-{args.images}"], results[f"generate-{args.images}"]
    ratio = [b["seconds"] / s["seconds"] for s, b in zip(stage, bare)]
    lines = [
        "# Semantic dedupe and generated captions",
        "",
        f"Median (min-max) of {args.rounds} rounds, each method in a fresh process.",
        "",
        f"## Semantic dedupe of {args.items:,} 512-d embeddings (float16)",
        "",
        "| n | k-means s | in-cluster search s | total s | peak RSS GB | planted copies found | others found |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows in (big, small):
        lines.append(
            f"| {rows[0]['n']:,} | {median_range([r['kmeans_s'] for r in rows], '.1f')} "
            f"| {median_range([r['total_s'] - r['kmeans_s'] for r in rows], '.1f')} "
            f"| {median_range([r['total_s'] for r in rows], '.1f')} "
            f"| {median_range([r['peak_rss_gb'] for r in rows], '.2f')} | {rows[0]['planted_found']:.4f} "
            f"| {rows[0]['others_found']} |"
        )
    speed = [e["exact_s"] / s["total_s"] for s, e in zip(small, exact)]
    lines += [
        "",
        f"Against faiss's exact search (IndexFlatIP, k = 2) on the first {args.compare:,}: "
        f"{median_range([e['exact_s'] for e in exact], '.1f')} s, so ours runs at "
        f"{median_range(speed, '.1f')}× its speed, and finds {exact[0]['recall_of_exact']:.4f} of the "
        f"{exact[0]['exact_pairs']} items exact search puts at cosine ≥ {1 - EPSILON} to another.",
        "",
        f"## Generated captions: {args.images} real photos, BLIP-base's shape, {NEW_TOKENS} tokens, "
        f"batches of {CAPTION_BATCH} ({stage[0]['device']})",
        "",
        "| method | images/s | peak RSS GB |",
        "|---|---:|---:|",
        f"| caption stage | {median_range([r['images_per_s'] for r in stage], '.2f')} "
        f"| {median_range([r['peak_rss_gb'] for r in stage], '.2f')} |",
        f"| bare generate | {median_range([r['images_per_s'] for r in bare], '.2f')} "
        f"| {median_range([r['peak_rss_gb'] for r in bare], '.2f')} |",
        "",
        f"The stage runs at {median_range(ratio, '.3f')}× the bare call's throughput.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
