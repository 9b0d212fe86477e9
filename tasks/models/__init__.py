"""Encoders (CLIP, CLAP) loaded from local folders: torch, open_clip and transformers load on first use."""
