"""The commit clock (collection/clock.py): a search asks SQLite whether another connection
committed only when the clock moved; the clock is odd while a commit runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastrag.collection import Collection, clock
from fastrag.collection.clock import CommitClock

DOCS = {"apple": "Apples grow on trees in the orchard.", "bread": "Bread is baked in an oven."}


def new(path: Path) -> Collection:
    col = Collection.create(path, encoder=None)
    col.add(list(DOCS.values()), ids=list(DOCS), metadata=[{"kind": "food"}] * len(DOCS))
    col.commit()
    return col


def statements(col: Collection) -> list[str]:
    seen: list[str] = []
    col._db.set_trace_callback(seen.append)
    return seen


def test_a_search_asks_sqlite_only_after_the_clock_moved(tmp_path: Path) -> None:
    path = tmp_path / "c"
    writer = new(path)
    reader = Collection.open(path)
    assert [r.id for r in reader.search("oven", method="bm25")] == ["bread"]
    seen = statements(reader)
    for _ in range(3):
        assert [r.id for r in reader.search("apples", method="bm25")] == ["apple"]
    assert seen == []  # nothing committed: no PRAGMA data_version, no query at all
    writer.add(["Pears ripen in the oven of summer."], ids=["pear"])
    writer.commit()
    assert {r.id for r in reader.search("oven", method="bm25")} == {"bread", "pear"}
    assert any("data_version" in s for s in seen)  # the clock moved: SQLite was asked
    seen.clear()
    reader.search("oven", method="bm25", filter={"kind": "food"})  # a filter reads the database
    assert any("data_version" in s for s in seen)
    reader.close()
    writer.close()


def test_the_clock_is_odd_while_a_commit_runs_and_even_after(tmp_path: Path) -> None:
    col = new(tmp_path / "c")
    at_commit = []
    col._db.set_trace_callback(
        lambda sql: at_commit.append(col._clock.read()) if sql == "COMMIT" else None)
    before = col._clock.read()
    col.add(["Comets have tails."], ids=["comet"])
    col.commit()
    assert before % 2 == 0 and at_commit == [before + 1] and col._clock.read() == before + 2
    col.close()
    c = CommitClock(tmp_path / "c")
    with pytest.raises(OSError), c.committing():
        raise OSError("disk full")  # a failed commit: even again, readers find nothing new
    assert c.read() == before + 4
    c.close()


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_writer_killed_inside_a_commit_leaves_readers_asking_sqlite(tmp_path: Path,
                                                                      when: str) -> None:
    path = tmp_path / "c"
    new(path).close()
    script = textwrap.dedent(f"""
        import os
        from contextlib import contextmanager
        from fastrag.collection import Collection, clock
        col = Collection.open({str(path)!r})
        col.add(["Pears are sweet."], ids=["pear"])
        committing = clock.CommitClock.committing
        @contextmanager
        def dying(self):
            with committing(self):
                if {when!r} == "before":
                    os.kill(os.getpid(), 9)
                yield
                os.kill(os.getpid(), 9)  # committed, the clock still odd
        clock.CommitClock.committing = dying
        col.commit()
    """)
    reader = Collection.open(path)
    reader.search("pears", method="bm25")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert reader._clock.read() % 2 == 1  # left odd: no reader trusts it
    found = [r.id for r in reader.search("pears", method="bm25")]
    assert found == ([] if when == "before" else ["pear"])
    seen = statements(reader)
    reader.search("pears", method="bm25")
    assert any("data_version" in s for s in seen)
    writer = Collection.open(path)  # the next commit makes it even again, and is seen
    writer.add(["Pears are sweet and ripe."], ids=["pear"])
    writer.commit()
    assert writer._clock.read() % 2 == 0
    assert [r.passage for r in reader.search("pears", method="bm25")] == [
        "Pears are sweet and ripe."]
    writer.close()
    reader.close()


def test_without_a_clock_every_search_asks_sqlite(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c"
    writer = new(path)
    monkeypatch.setattr(clock, "fcntl", None)  # as on a platform without it
    reader = Collection.open(path)
    assert reader._clock.read() == -1
    reader.search("oven", method="bm25")
    seen = statements(reader)
    reader.search("oven", method="bm25")
    assert any("data_version" in s for s in seen)
    writer.add(["Pears ripen in the oven."], ids=["pear"])
    writer.commit()
    assert {r.id for r in reader.search("oven", method="bm25")} == {"bread", "pear"}
    reader.close()
    writer.close()


def test_a_clock_file_that_cannot_be_opened_or_is_short(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / clock.FILE).write_bytes(b"\x01")  # cut short: made whole (zeros), then used
    c = CommitClock(folder)
    assert c.read() == 0
    with c.committing():
        assert c.read() == 1
    assert c.read() == 2
    c.close()
    c.close()  # twice does nothing
    other = CommitClock(folder)
    assert other.read() == 2  # another process sees the value
    other.close()
    (folder / clock.FILE).unlink()
    (folder / clock.FILE).mkdir()  # not a file: no clock
    assert CommitClock(folder).read() == -1
    with CommitClock(folder).committing():  # a commit goes on without it
        pass
    if os.geteuid() != 0:  # root opens anything
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert CommitClock(ro).read() == -1
