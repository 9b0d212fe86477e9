"""Work that is done once: "already done -> its recorded result; else do it, record the result last".

The record (a JSON file) is the commit point: written after everything the work writes, so a run cut
short anywhere before it leaves no record, and the next run does the whole work again, overwriting what
the first half-wrote (every output has a deterministic name). A step over a shard, a planning pass and
a decision over all shards are all work of this kind.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from . import storage


def committed(
    record_of: Callable[..., str],
    save: Callable[[Any], Any] = lambda result: result,
    restore: Callable[..., Any] = lambda recorded, **arguments: recorded,
):
    """Decorate a function whose result is recorded at `record_of(**its arguments)` once it returns;
    called again with that record present, it returns `restore(recorded, **its arguments)` without
    running. `save` turns a result into JSON values (a dataclass: `dataclasses.asdict`)."""

    def decorate(work: Callable) -> Callable:
        signature = inspect.signature(work)

        @functools.wraps(work)
        def once(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            record = record_of(**bound.arguments)
            if storage.exists(record):
                return restore(storage.read_json(record), **bound.arguments)
            result = work(*args, **kwargs)
            storage.write_json(record, save(result))  # the commit point, last
            return result

        return once

    return decorate
