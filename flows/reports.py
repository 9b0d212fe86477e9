"""What the commands print: the funnel of a build (one table for a build and a dry run), a backfill's
partitions, the published versions, one version, and a version's duplicates."""

from __future__ import annotations

from collections import Counter


def print_funnel_table(funnel: list[dict]) -> None:
    """Items in, kept and rejected (with the reasons) per stage."""
    print(f"{'stage':<10}{'in':>8}{'kept':>8}{'rejected':>10}  reasons")
    for step in funnel:
        reasons = ", ".join(f"{r}={n}" for r, n in step["reasons"].items())
        print(f"{step['stage']:<10}{step['in']:>8}{step['kept']:>8}{step['rejected']:>10}  {reasons}")
        if "items" in step:
            print(f"{'':<10}{'':>8}{step['items']:>8}  items: the annotation rows of one media file are one item")


def print_dry_run(result: dict) -> None:
    from tasks.build.audit import histogram_line

    print_funnel_table(result["funnel"])
    print(
        f"\ndedupe would reject {result['dedupe'].get('duplicates', 0)} items: "
        f"{', '.join(f'{r}={n}' for r, n in result['dedupe'].get('by_reason', {}).items()) or 'none'}"
    )
    for modality, part in (result["dedupe"].get("semantic") or {}).items():
        shares = ", ".join(f"{e}: {share:.1%}" for e, share in part["removed_share_by_epsilon"].items())
        print(f"semantic {modality} (ε {part['epsilon']:g}, {part['mode']}): share each ε would remove: {shares}")
    report = result["dry_run"]
    print("\nEach filter rule on its own, per source (items rejected / texts dropped):")
    print(f"  {'source':<16}{'rule':<28}{'items':>8}{'texts':>8}")
    for line in report["rules"]:
        print(f"  {line['source']:<16}{line['rule']:<28}{line['items']:>8}{line['texts']:>8}")
    for source, counts in report["kept"].items():
        print(f"With every rule, {source} keeps {counts['kept']} of {counts['of']} items")
    print("\nScores (10 equal bins from min to max):")
    for name, h in report["histograms"].items():
        if h["min"] == h["max"]:
            print(f"  {name:<22}all {h['min']:.3g}, n={sum(h['counts'])}")
        else:
            print(f"  {name:<22}{h['min']:>10.3g} {histogram_line(h['counts'])} {h['max']:<10.3g} n={sum(h['counts'])}")
    print("\nDry run: nothing was published.")


def print_funnel(result: dict) -> None:
    if "dry_run" in result:
        return print_dry_run(result)
    if result.get("nothing_to_build"):
        print(f"Nothing to build: {result['nothing_to_build']}")
        return
    manifest = result["manifest"]
    if result["skipped"]:
        print(f"Already published (nothing changed): {result['version']}")
        return
    print_funnel_table(result["funnel"])
    dropped = Counter()
    for step in result["funnel"]:
        dropped.update(step["texts_dropped"])
    if dropped:
        print(f"\nTexts dropped from kept items: {', '.join(f'{r}={n}' for r, n in sorted(dropped.items()))}")
    from tasks.core import storage

    stats = storage.read_json(storage.join(result["version"], "stats.json"))
    print_download_failures(stats)
    print_caption_duplicates(stats.get("dedupe", {}))
    splits = ", ".join(f"{name}={s['samples']}" for name, s in manifest["splits"].items())
    print(
        f"\nPublished {manifest['samples']} items with {manifest['texts']} texts ({splits});"
        f" {manifest['rejected']} items rejected"
    )
    for name in manifest.get("strata_off_target", []):
        shares = stats["strata"][name]["shares"]
        print(f"Stratum {name} is more than 2 points off its split shares: {shares}")
    print(f"Version: {result['version']}  (data card: README.md)")


def print_download_failures(stats: dict) -> None:
    if not stats.get("fetch_failures_by_source"):
        return
    print("\nDownload failures by source:")
    for source, reasons in stats["fetch_failures_by_source"].items():
        counts = ", ".join(f"{reason.removeprefix('fetch:')}={n}" for reason, n in reasons.items())
        print(f"  {source:<16}{counts}")
    print(f"  top failing hosts: {', '.join(f'{host}={n}' for host, n in stats['top_failing_hosts'])}")


def print_caption_duplicates(report: dict) -> None:
    if report.get("caption_duplicates"):
        counts = ", ".join(f"{source}={n}" for source, n in report["caption_duplicates"].items())
        print(f"\nItems with a near-identical caption on another item (grouped together), by source: {counts}")
    for boilerplate in report.get("boilerplate", [])[:5]:
        print(
            f"Boilerplate caption on {boilerplate['items']} items (not used to group): {boilerplate['caption'][:80]!r}"
        )


def print_backfill(rows: list[dict]) -> None:
    print(f"{'partition':<12}{'state':<20}{'items':>8}{'rejected':>10}{'seconds':>9}  detail")
    for row in rows:
        print(
            f"{row['partition']:<12}{row['state']:<20}{_blank(row['items']):>8}{_blank(row['rejected']):>10}"
            f"{row['seconds']:>9.1f}  {row['detail']}"
        )


def _blank(value) -> str:
    return "" if value is None else str(value)


def print_status(root: str, versions: list[dict], runs: list[dict]) -> None:
    print(f"Published versions under {root}:")
    if not versions:
        print("  none")
    else:
        print(
            f"  {'dataset':<14}{'partition':<12}{'train':>8}{'val':>7}{'test':>7}{'rejected':>10}  {'published':<26}"
            f"{'build':<14}code"
        )
    for v in versions:
        n = v["samples"]
        print(
            f"  {v['dataset']:<14}{v['partition']:<12}{n['train']:>8}{n['val']:>7}{n['test']:>7}{v['rejected']:>10}"
            f"  {v['created_at']:<26}{v['build_key']:<14}{(v['stage_code_sha256'] or '')[:12]}"
        )
    print(f"\nRecent runs ({len(runs)}):")
    for run in runs:
        detail = run.get("error") or (f"{run['samples']} items" if run.get("samples") is not None else "")
        print(f"  {run['started_at']:<26}{run['dataset']:<14}{run['partition']:<12}{run['state']:<19}{detail[:100]}")
    if versions:
        print(
            "\nEach manifest.json holds the recipe and the code digest that built it: "
            "`mmetl inspect <dataset>/<partition>` shows one."
        )


def print_version(described: dict) -> None:
    """One version as `mmetl inspect` shows it: counts, splits, reasons, a few items."""
    from tasks.core.schema import SPLITS

    m, stats = described["manifest"], described["stats"]
    print(
        f"{m['dataset']} {m['partition']}: {m['samples']} items, {m['texts']} texts, {m['rejected']} rejected, "
        f"{m['texts_dropped']} texts dropped; published {m['created_at']}"
    )
    code = m.get("code") or {}
    print(
        f"  build {m['build_key']}, mmetl {code.get('mmetl')}, stage code {code.get('stage_code_sha256', '')[:12]}, "
        f"recipe {m['recipe']['name']} (the whole recipe is in manifest.json)"
    )
    print(f"  by modality: {', '.join(f'{k}={v}' for k, v in sorted(described['modalities'].items()))}")
    for name, split in sorted(m["splits"].items(), key=lambda kv: SPLITS.index(kv[0])):
        print(
            f"  {name:<6}{split['samples']:>8} items {split['groups']:>7} groups {len(split['tars']):>4} tars "
            f"{split['tar_bytes'] / 1e6:>10.1f} MB"
        )
    _print_counts("\nRejects by reason:", stats.get("rejects_by_reason", {}))
    if stats.get("texts_dropped_by_reason"):
        _print_counts("Texts dropped by reason:", stats["texts_dropped_by_reason"])
    print("\nA few items:")
    for sample in described["samples"]:
        facts = ", ".join(
            f"{k}={sample[k]:g}" if isinstance(sample[k], float) else f"{k}={sample[k]}"
            for k in ("width", "height", "duration_s")
            if sample.get(k) is not None
        )
        print(
            f"  [{sample['split']}] {sample['sample_id']} {sample['modality']} from {sample['source']}: "
            f"{sample['source_uri']} ({facts})"
        )
        for text in sample["texts"][:3]:
            print(f"      {text['kind']}: {text['text'][:100]}")


def _print_counts(title: str, counts: dict[str, int]) -> None:
    print(title)
    for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {reason:<32}{n:>8}")


def print_duplicates(found: list[dict], modality: str) -> None:
    """One line per item a version rejected as a copy of `modality`, least verified first."""
    unverified = sum(r["similarity"] is None and r["reason"] != "duplicate:exact" for r in found)
    print(f"{len(found)} {modality} items rejected as copies; {unverified} not verified on the media")
    for r in found:
        score = (
            "exact"
            if r["reason"] == "duplicate:exact"
            else ("not verified" if r["similarity"] is None else f"{r['similarity']:.3f}")
        )
        print(f"  {score:>12}  {r['sample_id']} copy of {r['duplicate_of']}: {r['source_uri']}")
        print(f"                {r['detail']}")


def print_diff(found: dict) -> None:
    a, b = found["a"], found["b"]
    print(f"{a['partition']} ({a['samples']} items) -> {b['partition']} ({b['samples']} items)")
    print(f"added {found['added']}, removed {found['removed']}, texts changed {found['texts_changed']}, "
          f"moved split {found['moved_split']}")  # fmt: skip
    for reason, n in found["removed_by_reason"].items():
        print(f"  removed: {reason}: {n}")
    print(f"\n{'source/modality':<32}{'added':>8}{'removed':>9}{'texts changed':>15}")
    for key, counts in found["by_source_modality"].items():
        print(f"{key:<32}{counts.get('added', 0):>8}{counts.get('removed', 0):>9}{counts.get('texts_changed', 0):>15}")
    for label, changes in (("recipe", found["recipe_changes"]), ("code", found["code_changes"])):
        for key, (x, y) in changes.items():
            print(f"{label} {key}: {x!r} -> {y!r}")
