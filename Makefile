# Two commands for a new machine: `make demo` builds the demo dataset, `make test` lints and runs the suite
# (`make bench` measures a build against the plain limit).
# Both create .venv and install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export RAY_USAGE_STATS_ENABLED := 0
export NO_ALBUMENTATIONS_UPDATE := 1  # img2dataset (tests, bench) imports albumentations, which would look online

.PHONY: demo test test-fast lint ui bench clean system

# Debian packages: Chromaprint's library (audio fingerprints); for tests and benchmarks real speech
# recordings (Asterisk's prompts) and a speech synthesizer (espeak-ng: words in several voices), and
# FFmpeg's libraries for torchcodec (Hugging Face datasets decodes the published audio and video with
# it). Skipped when already there.
SYSTEM_PACKAGES := libchromaprint1 asterisk-core-sounds-en-wav ffmpeg espeak-ng fonts-dejavu-core
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system:
	@dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }

$(STAMP): pyproject.toml | system
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	# img2dataset without its declared dependencies (see pyproject.toml); then prove the backport is absent
	$(BIN)/pip install --quiet --no-deps img2dataset==1.47.0
	! $(BIN)/pip show --quiet dataclasses 2>/dev/null
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/mmetl build recipes/demo.yaml

test: lint
	$(BIN)/pytest

# everything that starts no server, cluster or mmetl process, but the largest copy searches over
# recordings (make test runs every test): under two minutes on 2 cores, in three single-threaded
# processes (one waits on a download or a subprocess while two compute)
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/pytest -m "not e2e and not slow" -n 3 --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

ui: $(STAMP)
	$(BIN)/mmetl ui

# mmetl build vs a decode-only baseline on 5k and 20k real-photo JPEGs (bench/out/build/report.md), and
# downloading 10k URLs from loopback: mmetl vs the img2dataset CLI (bench/out/collect/report.md), and
# near-duplicate search over 1M and 10M image hashes and 1M captions: mmetl vs faiss, brute force and
# datasketch (bench/out/dedupe/report.md), and the dedupe decision on an audio-heavy corpus with and without
# the waveform check, and the leakage guard (bench/out/dedupe_audio/report.md), and clean's per-image and per-clip cost against decode-only and
# img2dataset's resizer + imagehash (bench/out/clean/report.md), and the align step's CLIP scoring
# against the model's bare forward pass (bench/out/align/report.md), and the driver's plan, dedupe and split
# decisions on 1M and 2M planned URL items (bench/out/driver/report.md), and voice activity, transcripts,
# scene cuts and text in pictures against the libraries' own calls (bench/out/understand/report.md), and
# semantic dedupe of 1M embeddings against faiss's exact search and the caption stage against the bare
# `generate` call (bench/out/semantic/report.md). About 110 minutes in all on 2 cores.
bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/clean.py
	$(BIN)/python bench/collect.py
	$(BIN)/python bench/dedupe.py
	$(BIN)/python bench/dedupe_audio.py
	$(BIN)/python bench/align.py
	$(BIN)/python bench/driver.py
	$(BIN)/python bench/understand.py
	$(BIN)/python bench/semantic.py
	$(BIN)/python bench/worker_memory.py


clean:
	rm -rf data
