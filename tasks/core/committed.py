"""Work that is done once: "already done -> its recorded result; else do it, record the result last".

The record (a JSON file) is the commit point: written after everything the work writes, so a run cut
short anywhere before it leaves no record, and the next run does the whole work again, overwriting what
the first half-wrote (every output has a deterministic name). A step over a shard, a planning pass and
a decision over all shards are all work of this kind.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

from . import storage


class Record:
    """A typed result of committed work (a dataclass): recorded as its fields, restored from them. A result
    that keeps some fields out of its record (paths its arguments give again) overrides both."""

    def saved(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def restored(cls, recorded: dict, **arguments) -> Record:
        return cls(**recorded)


def committed(record_of: Callable[..., str], kind: type[Record]):
    """Decorate a function returning a `kind` whose record is written at `record_of(**its arguments)` once
    it returns; called again with that record present, it returns `kind.restored(recorded, **its
    arguments)` without running."""

    def decorate(work: Callable) -> Callable:
        signature = inspect.signature(work)

        @functools.wraps(work)
        def once(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            record = record_of(**bound.arguments)
            if storage.exists(record):
                return kind.restored(storage.read_json(record), **bound.arguments)
            result = work(*args, **kwargs)
            storage.write_json(record, result.saved())  # the commit point, last
            return result

        return once

    return decorate
