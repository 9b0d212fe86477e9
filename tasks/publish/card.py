"""The data card: `README.md` at a version's root, and its plots.

The front matter is Hugging Face's dataset card metadata: one config per modality, each reading its own
tars with every member declared (a reader that inferred the schema from the first few items would miss
members and containers that appear later), so `datasets.load_dataset(version, "audio")` yields every
audio item with its media. The Parquet index stays out of `configs` (a second builder kind fails there);
the card shows how to load it. The body is for a person: sources and licenses, the funnel with its
reject reasons, splits x modality x source with the shares per stratum, and plots (PNG, under `plots/`),
each carrying the numbers it draws in its `mmetl:data` text chunk so that a reader (or a test) can
check them against `stats.json`.
"""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from ..core.schema import SPLITS, scores_dict
from ..media.kinds import KINDS
from ..sources import SourceConfig
from ..stages.align import AlignConfig
from ..stages.split import SplitConfig

SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]  # fmt: skip
ARROW_DTYPES = {
    pa.string(): "string", pa.int32(): "int32", pa.int64(): "int64", pa.float32(): "float32",
    pa.float64(): "float64", pa.bool_(): "bool", pa.uint32(): "uint32",
}  # fmt: skip
PLOT_DATA_KEY = "mmetl:data"


@dataclass(frozen=True)
class Recorded:
    """What a version records of the recipe that built it: the recipe as written (the manifest's `recipe`),
    and the parts its card and stats describe."""

    written: dict
    sources: tuple[SourceConfig, ...]
    split: SplitConfig
    align: AlignConfig


def recorded_from(written: dict) -> Recorded:
    """A published manifest's recipe read back, for rewriting its card (a takedown's revision). Align's models
    may be gone since the build: where its part no longer loads, the card's plots go without its thresholds."""
    from pydantic import ValidationError

    from ..sources import make_source

    listed = written.get("sources") or ([written["source"]] if written.get("source") else [])
    try:
        align = AlignConfig.model_validate(written.get("align") or {})
    except ValidationError:
        align = AlignConfig()
    split = SplitConfig.model_validate(written.get("split") or {})
    return Recorded(written, tuple(make_source(**s) for s in listed), split, align)


@dataclass(frozen=True)
class Version:
    """What the card describes: a version about to be committed."""

    dataset: str
    partition: str
    recipe: Recorded
    stats: dict
    index: pa.Table | None  # every published item, all splits
    rejects: pa.Table
    tar_members: dict[str, list[str]]  # modality -> member suffixes of its tars
    files: dict[str, dict]

    @property
    def modalities(self) -> list[str]:
        return [m for m in KINDS if m in self.tar_members]

    def column(self, name: str, modality: str | None = None) -> list:
        if self.index is None:
            return []
        table = self.index
        if modality:
            table = table.filter(pc.equal(table.column("modality"), modality))
        return table.column(name).to_pylist()


# ---- front matter ---------------------------------------------------------------------------------------


def feature(type_: pa.DataType) -> dict:
    """An Arrow type as Hugging Face card `features` YAML (what follows a field's `name`)."""
    if pa.types.is_struct(type_):
        return {"struct": [{"name": f.name, **feature(f.type)} for f in type_]}
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        inner = feature(type_.value_type)
        return {"list": inner.get("dtype") or inner.get("struct") or inner}
    return {"dtype": ARROW_DTYPES[type_]}


def member_feature(suffix: str, modality: str) -> dict:
    """How a reader should type a member: media by its container's kind, the JSON by its member schema."""
    ext = suffix.rsplit(".", 1)[-1]
    for kind in KINDS.values():
        if ext in kind.extensions:
            return {"dtype": kind.name}
    if ext == "json":
        return feature(pa.struct(list(KINDS[modality].member_schema())))
    if ext == "npy":  # a log-mel spectrogram: mel bins x frames
        return {"list": {"list": "float32"}}
    return {"dtype": "string" if ext == "txt" else "binary"}


def licenses(recipe: Recorded) -> dict[str, str]:
    return {s.name: s.license or "unknown" for s in recipe.sources}


def front_matter(v: Version) -> dict:
    found = sorted(set(licenses(v.recipe).values()))
    total = v.index.num_rows if v.index is not None else 0
    meta: dict = {"pretty_name": v.dataset, "license": found[0] if len(found) == 1 else "other"}
    if len(found) > 1:
        meta["license_name"] = "mixed: " + ", ".join(f"{s} ({lic})" for s, lic in licenses(v.recipe).items())
    meta["task_categories"] = sorted({t for m in v.modalities for t in KINDS[m].card_tasks})
    meta["size_categories"] = [next((name for top, name in SIZE_CATEGORIES if total < top), "n>1T")]
    meta["tags"] = ["mmetl", "webdataset", *v.modalities]
    present = {m: [s for s in SPLITS if any(t.startswith(f"{s}/{m}-") for t in v.files)] for m in v.modalities}
    meta["configs"] = [
        {
            "config_name": m,
            **({"default": True} if i == 0 else {}),
            "data_files": [{"split": s, "path": f"{s}/{m}-*.tar"} for s in present[m]],
        }
        for i, m in enumerate(v.modalities)
    ]
    meta["dataset_info"] = [
        {
            "config_name": m,
            "features": [{"name": s, **member_feature(s, m)} for s in v.tar_members[m]]
            + [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}],
        }
        for m in v.modalities
    ]
    return meta


# ---- body ----------------------------------------------------------------------------------------------


def readme(v: Version) -> bytes:
    sections = [_intro, _how_to_load, _sources, _splits, _funnel, _duplicates, _written, _reviewed, _plots]
    front = yaml.safe_dump(front_matter(v), sort_keys=False, allow_unicode=True)
    body = "\n\n".join("\n".join(lines) for lines in (section(v) for section in sections) if lines)
    return ("---\n" + front + "---\n\n" + body + "\n").encode()


def _intro(v: Version) -> list[str]:
    splits = v.stats["splits"].values()
    ratios = ":".join(f"{r:g}" for r in v.recipe.split.ratios)
    return [
        f"# {v.dataset} — version {v.partition}",
        "",
        f"{sum(x['samples'] for x in splits)} items ({_counts(_count(v.column('modality')))}) with"
        f" {sum(x['texts'] for x in splits)} texts, split {ratios} by group. Built by mmetl: `manifest.json`"
        " lists every file with its sha256, and the recipe and code that made it.",
    ]


def _how_to_load(v: Version) -> list[str]:
    first = v.modalities[0] if v.modalities else "image"
    return [
        "## Load it",
        "",
        "```python",
        "import datasets, pandas",
        f'version = "{v.dataset}/versions/{v.partition}"  # this folder, local or s3://',
        f'data = datasets.load_dataset(version, "{first}")  # one config per modality',
        "# the index: one row per item, every text and measurement, and its tar + key",
        'index = pandas.read_parquet(f"{version}/train/index.parquet")',
        "```",
        "",
        "WebDataset readers take the tars as they are: `{split}/{modality}-{n:06d}.tar`, members"
        " `<key>.<media>`, `<key>.json`, `<key>.txt`.",
    ]


def _sources(v: Version) -> list[str]:
    published, rejected = _count(v.column("source")), _count(v.rejects.column("source").to_pylist())
    lines = ["## Sources", "", "| source | kind | license | published | rejected |", "|---|---|---|---:|---:|"]
    for s in v.recipe.sources:
        counts = f"{published.get(s.name, 0)} | {rejected.get(s.name, 0)}"
        lines.append(f"| {s.name} | {s.kind} | {s.license or 'unknown'} | {counts} |")
    return lines


def _splits(v: Version) -> list[str]:
    lines = [
        "## Splits",
        "",
        "| modality | source | " + " | ".join(SPLITS) + " | shares |",
        "|---|---|---:|---:|---:|---:|",
    ]
    cells = Counter(zip(v.column("modality"), v.column("source"), v.column("split")))
    for modality, source in sorted({(m, s) for m, s, _ in cells}):
        counts = [cells[(modality, source, split)] for split in SPLITS]
        shares = " / ".join(f"{n / sum(counts):.3f}" for n in counts)
        lines.append(f"| {modality} | {source} | " + " | ".join(map(str, counts)) + f" | {shares} |")
    off = v.stats["strata_off_target"]
    verdict = (
        f"**off target by more than 2 points: {', '.join(off)}**."
        if off
        else "every stratum of 100 items or more is within 2 points of its target shares (`stats.json`, `strata`)."
    )
    strata = ", ".join(v.recipe.split.stratify) or "one stratum"
    lines += ["", "Groups never straddle splits and keep their split in every version. New groups are dealt out"
              f" per stratum ({strata}): {verdict}"]  # fmt: skip
    return lines


def _funnel(v: Version) -> list[str]:
    lines = ["## Funnel", "", "| stage | in | kept | rejected | reasons |", "|---|---:|---:|---:|---|"]
    for step in v.stats["funnel"]:
        reasons = _counts(step.get("reasons") or {})
        lines.append(f"| {step['stage']} | {step['in']} | {step['kept']} | {step['rejected']} | {reasons} |")
    return lines + [
        "",
        "Every rejected item is in `rejects.parquet` with its reason; removed texts in `dropped_texts.parquet`.",
    ]


def _duplicates(v: Version) -> list[str]:
    """What dedupe removed per modality, how its sound pairs were verified, and what the leakage guard found."""
    report = v.stats.get("dedupe") or {}
    lines = ["## Duplicates", "", "| modality | clusters | removed | candidates checked | confirmed | refuted |"]
    lines.append("|---|---:|---:|---:|---:|---:|")
    checks = report.get("verification") or {}
    for modality in sorted(set(report.get("by_modality") or {}) | set(checks)):
        counts, check = (report.get("by_modality") or {}).get(modality, {}), checks.get(modality, {})
        lines.append(
            f"| {modality} | {counts.get('clusters', 0)} | {counts.get('removed', 0)} | {check.get('candidates', '')}"
            f" | {check.get('confirmed', '')} | {check.get('refuted', '')} |"
        )
    for modality, check in sorted(checks.items()):
        if check.get("confirmed_similarity"):
            low, high = check["confirmed_similarity"]
            refuted = check["refuted_similarity"] or "none"
            lines += ["", f"{modality.capitalize()} copies were verified on the waveform: similarity {low}-{high}"
                      f" (refuted look-alikes: {refuted}; unverified: {check['unverified']})."]  # fmt: skip
    lines += _semantic(report.get("semantic") or {})
    guard = report.get("leak_guard") or {}
    if guard:
        lines += ["", f"The leakage guard compared {guard['items_checked']} items with a wider search: "
                  f"{guard['leaks']} copies across splits, {guard['moved_groups']} groups moved."]  # fmt: skip
    return lines


def _semantic(report: dict) -> list[str]:
    """Semantic dedupe per modality: what it did at its ε, and what each other ε would have removed."""
    if not report:
        return []
    epsilons = sorted({e for part in report.values() for e in part["removed_share_by_epsilon"]}, key=float)
    header = "| modality | ε | mode | items | duplicates | of published | " + " | ".join(f"ε {e}" for e in epsilons)
    lines = [
        "",
        "Semantic duplicates (embeddings at cosine ≥ 1 − ε; docs/dedupe.md), and the share each ε would remove:",
        "",
        header + " |",
        "|---|---:|---|---:|---:|---:|" + "---:|" * len(epsilons),
    ]
    for name, part in sorted(report.items()):
        shares = " | ".join(f"{part['removed_share_by_epsilon'].get(e, 0):.1%}" for e in epsilons)
        done = "rejected" if part["mode"] == "reject" else "grouped"
        lines.append(
            f"| {name} | {part['epsilon']:g} | {done} | {part['items']} | {part['duplicates']} "
            f"| {part['of_published']} | {shares} |"
        )
    return lines


def _written(v: Version) -> list[str]:
    """Texts the build wrote itself, beside the sources': read in pictures, heard in speech."""
    kinds = v.stats.get("text_kinds") or {}
    transcript = (v.stats.get("generate") or {}).get("transcript")
    lines = []
    if kinds.get("ocr"):
        lines.append(f"- {kinds['ocr']} texts of kind `ocr`: the text read in the pictures (PP-OCRv6, `clean.*.ocr`).")
    if transcript:
        model = transcript["model"]
        name = f"{model['name']} {model.get('version', '')}".strip()
        lines.append(f"- {kinds.get('asr', 0)} texts of kind `asr`: transcripts by {name} ({transcript['language']});"
                     " `features.asr` says why an item was not transcribed.")  # fmt: skip
    if caption := (v.stats.get("generate") or {}).get("caption"):
        prompt = f"asked {caption['prompt']!r}" if caption["prompt"] else "without a prompt"
        lines.append(
            f"- {kinds.get('synthetic', 0)} texts of kind `synthetic`: captions by {caption['model']['name']}"
            f" ({prompt}, `{caption['mode']}`); each names its model and prompt in `generated_by`."
        )
    return ["## Texts the build wrote", "", *lines] if lines else []


def _reviewed(v: Version) -> list[str]:
    """What reviewers overruled (`mmetl review import`)."""
    counts = v.stats.get("reviews") or {}
    if not (counts.get("kept_against_rule") or counts.get("rejected")):
        return []
    return [
        "## Reviews",
        "",
        f"Reviewers kept {counts['kept_against_rule']} items against a rule that would have "
        f"dropped them (`features.review` says which) and rejected {counts['rejected']} (`review:rejected`).",
    ]


def _plots(v: Version) -> list[str]:
    return ["## Plots", ""] + [f"![{name}]({name})" for name in sorted(f for f in v.files if f.startswith("plots/"))]


def body(readme_bytes: bytes) -> str:
    """The card without its front matter (for a Prefect artifact)."""
    return readme_bytes.decode().split("\n---\n", 1)[-1].lstrip()


# ---- plots ---------------------------------------------------------------------------------------------


# scores clean measures only when asked (motion, speech, text in pictures): a plot each, a panel per kind measured
MEASURED_PLOTS = {
    "video_motion": {"video motion (frame widths / s)": ("video", "motion")},
    "speech_ratio": {"audio speech ratio": ("audio", "speech_ratio"), "video speech ratio": ("video", "speech_ratio")},
    "text_area": {
        "image text area": ("image", "text_area"),
        "video text area (keyframes' median)": ("video", "text_area"),
    },
}


def plots(v: Version) -> list[tuple[str, bytes]]:
    """Every plot this version has data for: (plots/<name>.png, PNG bytes)."""
    made = []
    by_split_source: dict[str, dict[str, int]] = defaultdict(dict)
    for (split, source), n in Counter(zip(v.column("split"), v.column("source"))).items():
        by_split_source[split][source] = n
    made.append(("items_per_split_source", _bars({s: by_split_source.get(s, {}) for s in SPLITS}, "items")))
    widths, heights = _numbers(v.column("width", "image")), _numbers(v.column("height", "image"))
    if np.isfinite(widths).any():
        made.append(("image_sizes", _histograms({
            "short side (px)": np.minimum(widths, heights), "aspect ratio (long / short)":
            np.maximum(widths, heights) / np.maximum(np.minimum(widths, heights), 1)})))  # fmt: skip
    durations = {f"{m} duration (s)": _numbers(v.column("duration_s", m)) for m in ("audio", "video")}
    durations = {name: d for name, d in durations.items() if np.isfinite(d).any()}
    if durations:
        made.append(("durations", _histograms(durations)))
    for name, panels in MEASURED_PLOTS.items():
        measured = {label: _numbers([scores_dict({"scores": s}).get(score) for s in v.column("scores", modality)])
                    for label, (modality, score) in panels.items()}  # fmt: skip
        measured = {label: values for label, values in measured.items() if np.isfinite(values).any()}
        if measured:
            made.append((name, _histograms(measured)))
    texts = pc.list_flatten(v.index.column("texts")) if v.index is not None else pa.array([], pa.null())
    if len(texts):
        words = pc.fill_null(pc.struct_field(texts, "words"), 0).to_numpy(zero_copy_only=False)
        made.append(("caption_words", _histograms({"words per text": words.astype(float)})))
        made.append(("languages", _bars({"texts": dict(Counter(v.stats["text_languages"]).most_common(20))}, "texts")))
        scores = _align_scores(v, texts)
        if scores:
            made.append(("align_scores", _histograms(scores, _thresholds(v.recipe))))
    return [(f"plots/{name}.png", png) for name, png in made]


def _align_scores(v: Version, texts: pa.Array) -> dict[str, np.ndarray]:
    lengths = pc.list_value_length(v.index.column("texts")).to_numpy(zero_copy_only=False)
    modalities = np.repeat(np.array(v.column("modality"), object), lengths)
    scores = pc.struct_field(texts, "align_score").to_numpy(zero_copy_only=False).astype(float)
    found = {}
    for m in KINDS:
        picked = scores[(modalities == m) & ~np.isnan(scores)]
        if len(picked):
            found[f"{m}-text align score"] = picked
    return found


def _thresholds(recipe: Recorded) -> dict[str, float]:
    parts = recipe.align.parts()
    return {f"{m}-text align score": c.min_score for m, c in parts.items() if c.min_score is not None}


def _figure(panels: int):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    figure = Figure(figsize=(5 * panels, 3.5), layout="constrained")
    return figure, figure.subplots(1, panels, squeeze=False)[0]


def _png(figure, data: dict) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=80, metadata={PLOT_DATA_KEY: json.dumps(data, sort_keys=True)})
    return out.getvalue()


def _bars(groups: dict[str, dict[str, int]], unit: str) -> bytes:
    """Grouped bars: one group per key of `groups`, one bar per inner key."""
    figure, (ax,) = _figure(1)
    labels = sorted({k for g in groups.values() for k in g})
    width = 0.8 / max(len(groups), 1)
    for i, (name, counts) in enumerate(groups.items()):
        x = np.arange(len(labels)) + i * width
        ax.bar(x, [counts.get(label, 0) for label in labels], width, label=name)
    ax.set_xticks(np.arange(len(labels)) + width * (len(groups) - 1) / 2, labels, rotation=30, ha="right")
    ax.set_ylabel(unit)
    if len(groups) > 1:
        ax.legend()
    return _png(figure, {"kind": "bars", "groups": groups})


def _histograms(series: dict[str, np.ndarray], lines: dict[str, float] | None = None) -> bytes:
    series = {name: values[np.isfinite(values)] for name, values in series.items()}  # unmeasured items: NaN
    figure, axes = _figure(len(series))
    data = {"kind": "histograms", "panels": {}}
    for ax, (name, values) in zip(axes, series.items()):
        counts, edges = np.histogram(values, bins=30)
        ax.stairs(counts, edges, fill=True)
        ax.set_xlabel(name)
        ax.set_ylabel("count")
        data["panels"][name] = {"counts": counts.tolist(), "edges": edges.tolist()}
        if lines and name in lines:
            ax.axvline(lines[name], color="red", linestyle="--", label="threshold")
            ax.legend()
            data["panels"][name]["lines"] = {"threshold": lines[name]}
    return _png(figure, data)


def _numbers(values: list) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in values], float)


def _count(values: list) -> dict:
    return dict(sorted(Counter(v for v in values if v is not None).items()))


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items())
