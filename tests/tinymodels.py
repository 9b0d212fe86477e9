"""Tiny embedding models the tests build and save as local folders, loaded by the same code a real
checkpoint takes: an open_clip CLIP trained for seconds on coloured shapes, and random transformers CLIP
and CLAP folders (with a word-level tokenizer) for checking scores against the libraries' own."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ("circle", "square", "triangle")
CAPTIONS = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES]

OPEN_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def shape_picture(caption: str, rng: random.Random, size: int = 96) -> Image.Image:
    """A coloured shape somewhere on a grey ground, as the caption says."""
    _, colour, shape = caption.split()
    ground = rng.randint(90, 160)
    image = Image.new("RGB", (size, size), (ground, ground, ground))
    draw = ImageDraw.Draw(image)
    side = rng.randint(size // 2, size * 4 // 5)
    x, y = rng.randint(0, size - side), rng.randint(0, size - side)
    box = (x, y, x + side, y + side)
    fill = tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in COLOURS[colour])
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x + side // 2, y), (x, y + side), (x + side, y + side)], fill=fill)
    return image


def train_open_clip(folder: Path, steps: int = 300, seed: int = 0) -> Path:
    """A tiny open_clip CLIP trained on shape pictures with their captions, saved as a local-dir
    checkpoint (open_clip_config.json + open_clip_model.safetensors)."""
    import open_clip
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = open_clip.CLIP(**OPEN_CLIP_CFG)
    preprocess = open_clip.image_transform(32, is_train=False)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=OPEN_CLIP_CFG["text_cfg"]["context_length"])
    tokens = tokenizer(CAPTIONS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    labels = torch.arange(len(CAPTIONS))
    model.train()
    for _ in range(steps):
        pixels = torch.stack([preprocess(shape_picture(c, rng)) for c in CAPTIONS])
        image, text, scale = model(pixels, tokens)
        logits = scale * image @ text.T
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPEN_CLIP_CFG, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def word_tokenizer(folder: Path, words: list[str], max_length: int):
    """A word-level tokenizer (Hugging Face `tokenizers`), saved so AutoTokenizer loads it offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[BOS]", "[EOS]", *sorted(set(words))])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=max_length,
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


WORDS = "a an the red green blue yellow circle square triangle dog barks bird sings tone rises falls of".split()


def text_tower(max_positions: int, **extra) -> dict:
    """A two-layer, 32-wide text transformer over WORDS (and the tokenizer's four special tokens)."""
    return {
        "vocab_size": len(WORDS) + 8,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": max_positions,
        "pad_token_id": 0,
        **extra,
    }


def transformers_clip(folder: Path, seed: int = 0) -> Path:
    """A random tiny transformers CLIP folder: config, weights, image processor, tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=text_tower(16, bos_token_id=2, eos_token_id=3),
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    word_tokenizer(folder, WORDS, 16)
    return folder


def transformers_clap(folder: Path, seed: int = 0) -> Path:
    """A random tiny transformers CLAP folder (HTSAT audio tower, RoBERTa text tower) at 16 kHz, 1 s windows."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    torch.manual_seed(seed)
    config = ClapConfig(
        text_config=text_tower(24, type_vocab_size=1),
        audio_config={
            "spec_size": 64,
            "num_mel_bins": 16,
            "patch_size": 4,
            "patch_stride": [4, 4],
            "patch_embeds_hidden_size": 16,
            "hidden_size": 32,
            "depths": [1, 1],
            "num_attention_heads": [2, 2],
            "window_size": 4,
            "enable_fusion": False,
            "projection_hidden_size": 32,
        },
        projection_dim=16,
    )
    ClapModel(config).save_pretrained(folder)
    ClapFeatureExtractor(
        feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1, fft_window_size=400, frequency_max=8000
    ).save_pretrained(folder)
    word_tokenizer(folder, WORDS, 22)
    return folder


def tone(frequency: float, seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def transformers_whisper(folder: Path, seed: int = 0) -> Path:
    """A random tiny transformers Whisper folder (one layer each side, 16 wide) with a byte-level tokenizer that
    knows Whisper's special tokens, English and German: it hears nothing, and proves a local folder is loaded
    and run as a real checkpoint is."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    specials = ["<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
                "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]  # fmt: skip
    tokenizer = WhisperTokenizer(
        vocab={c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}, merges=[]
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in ["<|endoftext|>", *specials]}
    end, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80, max_target_positions=64,
        pad_token_id=end, bos_token_id=end, eos_token_id=end, decoder_start_token_id=start,
    )  # fmt: skip
    torch.manual_seed(seed)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    GenerationConfig(
        decoder_start_token_id=start, eos_token_id=end, pad_token_id=end, max_length=20, is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]}, no_timestamps_token_id=ids["<|notimestamps|>"],
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
    ).save_pretrained(folder)  # fmt: skip
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(folder)
    return folder


def transformers_blip(folder: Path, seed: int = 0) -> Path:
    """A random tiny BLIP captioning folder (BlipForConditionalGeneration: config, weights, image processor and
    a word tokenizer): it writes nonsense over WORDS, the same nonsense for the same picture every time."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = word_tokenizer(folder, WORDS, 64)
    special = {"bos_token_id": 2, "sep_token_id": 3, "eos_token_id": 3, "pad_token_id": 0}
    config = BlipConfig(
        text_config={**text_tower(64), "vocab_size": len(tokenizer), **special},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )  # fmt: skip
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder
