"""The demo corpus: generated pictures, sounds, clips and documents that `mmetl build recipes/demo.yaml`
builds from, with no network."""
