"""A build in one process that SIGKILLs itself just before its Nth storage operation (a write, a
create, a streamed output, a move or a remove): a kill at an exact, reproducible point of any stage.

    python -m tests.killpoint CAPTIONS_JSONL ROOT [--die-at N] [--kind obelics]
    python -m tests.killpoint --takedown DATASET LIST ROOT [--die-at N]     a takedown instead of a build

Prints `op N: <operation> <uri>` for each, `ops N` at the end of a whole build, or `dying at op N:
<operation> <uri>` before the kill.
It runs every step of a build as the flow does, without Prefect or Ray (tests/helpers.build_in_process):
the kill lands in the stages' own storage protocol, which is what resuming relies on.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from tasks.core import storage

OPERATIONS = ("write_bytes", "create_exclusive", "open_output", "move", "remove")


def count_operations(die_at: int | None) -> list[int]:
    counter = [0]
    for name in OPERATIONS:
        original = getattr(storage, name)

        def wrapped(uri, *args, _original=original, _name=name, **kwargs):
            counter[0] += 1
            print(f"op {counter[0]}: {_name} {uri}", flush=True)
            if counter[0] == die_at:
                print(f"dying at op {die_at}: {_name} {uri}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return _original(uri, *args, **kwargs)

        setattr(storage, name, wrapped)
    return counter


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("captions")
    parser.add_argument("root")
    parser.add_argument("--die-at", type=int)
    parser.add_argument("--kind", default="manifest")  # the source's kind: `obelics` for documents
    parser.add_argument("--takedown", metavar="DATASET")  # then `captions` is the takedown list
    args = parser.parse_args()
    counter = count_operations(args.die_at)
    if args.takedown:
        from tasks.publish.takedown import take_down

        take_down(args.root, args.takedown, args.captions, "rights holder")
        print(f"ops {counter[0]}", flush=True)
        return 0
    from tasks.sources import make_source

    from .helpers import build_in_process

    _, manifest = build_in_process([make_source(name="demo", kind=args.kind, uri=args.captions)], args.root)
    print(f"ops {counter[0]} samples {manifest['samples']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
