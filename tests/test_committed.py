"""Work done once: the record is written last, a rerun returns it without working, a run cut short leaves
none (tasks/core/committed.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tasks.core import storage
from tasks.core.committed import Record, committed


@dataclass
class Counted(Record):
    total: int


def test_work_runs_once_and_a_run_cut_short_runs_again(tmp_path):
    calls = []

    @committed(lambda out, **_: str(tmp_path / f"{out}.json"), Counted)
    def work(out: str, fail: bool = False) -> Counted:
        calls.append(out)
        storage.write_bytes(str(tmp_path / f"{out}.data"), b"half")
        if fail:
            raise RuntimeError("killed")
        return Counted(total=len(calls))

    with pytest.raises(RuntimeError):
        work("a", fail=True)
    assert not (tmp_path / "a.json").exists()  # the data was written, the record was not
    assert work("a") == Counted(total=2)  # cut short: the whole work again
    assert work("a") == Counted(total=2) and calls == ["a", "a"]  # done: its record, no work
    assert storage.read_json(str(tmp_path / "a.json")) == {"total": 2}
    assert work(out="b") == Counted(total=3)  # arguments by name reach the record's name too
