"""Progress of a build for whoever watches it: per step, shards and items done, rate and ETA.

The flow reports (`step(...)`, then `done(...)` per shard); where reports go is the caller's choice:
by default they are log lines (the Prefect UI, a worker's log); `mmetl build` and `mmetl backfill`
install bars on the terminal (`use_bars`). No Prefect or Ray in here.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("mmetl.progress")


class StepProgress:
    """One step over its shards: a log line when it ends, by default."""

    def __init__(self, name: str, shards: int, items: int | None, unit: str = "item"):
        self.name, self.shards, self.items, self.unit = name, shards, items, unit
        self.shards_done = self.items_done = 0
        self.started = time.monotonic()

    def done(self, items: int) -> None:
        self.shards_done += 1
        self.items_done += items

    def close(self) -> None:
        seconds = time.monotonic() - self.started
        log.info(
            "%s: %d shards, %d %ss in %.1f s (%.1f/s)",
            self.name,
            self.shards_done,
            self.items_done,
            self.unit,
            seconds,
            self.items_done / max(seconds, 1e-9),
        )


class BarProgress(StepProgress):
    """A tqdm bar on the terminal: items done of the step's total, the shard count, rate and ETA."""

    def __init__(self, name: str, shards: int, items: int | None, unit: str = "item"):
        super().__init__(name, shards, items, unit)
        from tqdm import tqdm

        self.bar = tqdm(
            total=items,
            desc=f"{name:<22}",
            unit=unit,
            file=sys.stderr,
            dynamic_ncols=True,
            bar_format="{desc} {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} {unit}s{postfix} "
            "[{elapsed}<{remaining}, {rate_fmt}]",
        )
        self.bar.set_postfix_str(f"0/{shards} shards", refresh=True)

    def done(self, items: int) -> None:
        super().done(items)
        self.bar.set_postfix_str(f"{self.shards_done}/{self.shards} shards", refresh=False)
        self.bar.update(items)

    def close(self) -> None:
        self.bar.close()


_kind: type[StepProgress] = StepProgress


def use_bars() -> None:
    """Draw bars on this terminal for every step the flows of this process report."""
    global _kind
    _kind = BarProgress


def step(name: str, shards: int, items: int | None, unit: str = "item") -> StepProgress:
    return _kind(name, shards, items, unit)
