"""Parquet files as input: one document per row, the fields JSON lines use, metadata as JSON
values; damaged files and a missing pyarrow are skipped with their reason, nothing else lost."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fastrag.cli import main
from fastrag.collection import Collection
from fastrag.collection.ingest import read_documents

pa = pytest.importorskip("pyarrow", reason="the parquet extra (pyarrow) is not installed")
pq = pytest.importorskip("pyarrow.parquet")

ROWS = [
    {"_id": "p1", "title": "Owls", "text": "An owl hoots at night in the forest.",
     "year": 2021, "seen": dt.date(2024, 5, 1), "blob": b"\x00\x01", "tags": ["bird", "night"]},
    {"_id": "p2", "title": "Bread", "text": "Bread is baked in the oven every morning.",
     "year": 2023, "seen": dt.date(2025, 1, 2), "blob": b"", "tags": []},
    {"_id": None, "title": None, "text": "A row without an id is named by its position.",
     "year": None, "seen": None, "blob": None, "tags": None},
]


def write_parquet(path: Path, rows: list[dict[str, object]], row_group_size: int = 2) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def test_rows_become_documents_with_json_metadata(tmp_path: Path) -> None:
    write_parquet(tmp_path / "t.parquet", ROWS)
    found = read_documents(tmp_path)
    assert found.ids == ["p1", "p2", "t.parquet:3"]
    assert found.texts == [
        "Owls An owl hoots at night in the forest.",
        "Bread Bread is baked in the oven every morning.",
        "A row without an id is named by its position.",
    ]
    # dates as ISO text, lists kept, binary columns left out, the source named
    assert found.metadata[0] == {
        "source": "t.parquet", "year": 2021, "seen": "2024-05-01", "tags": ["bird", "night"]
    }
    assert found.skipped == [] and found.other_types == []


def test_text_and_id_fields(tmp_path: Path) -> None:
    write_parquet(tmp_path / "t.parquet", ROWS)
    found = read_documents(tmp_path / "t.parquet", text_fields=["text"], id_field="year")
    assert found.ids == ["2021", "2023"]
    assert found.texts[1] == "Bread is baked in the oven every morning."
    assert found.skipped == ["t.parquet:3: no 'year' field (--id-field)"]


def test_damaged_file_is_skipped_and_the_others_are_read(tmp_path: Path) -> None:
    good = write_parquet(tmp_path / "good.parquet", ROWS[:2])
    data = good.read_bytes()
    (tmp_path / "bad.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "note.txt").write_text("A plain note.", encoding="utf-8")
    found = read_documents(tmp_path)
    assert sorted(found.ids) == ["note.txt", "p1", "p2"]
    assert len(found.skipped) == 1 and found.skipped[0].startswith(
        "bad.parquet: not a readable Parquet file"
    )


def test_without_pyarrow_parquet_is_skipped_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_parquet(tmp_path / "t.parquet", ROWS)
    (tmp_path / "note.txt").write_text("A plain note.", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails
    found = read_documents(tmp_path)
    assert found.ids == ["note.txt"]
    assert found.skipped == [
        't.parquet: reading Parquet needs pyarrow (pip install "fastrag-engine[parquet]")'
    ]


def test_too_large_parquet_is_skipped(tmp_path: Path) -> None:
    write_parquet(tmp_path / "t.parquet", ROWS)
    found = read_documents(tmp_path, max_bytes=10)
    assert found.ids == [] and "larger than" in found.skipped[0]


def test_collection_and_cli_index_parquet(tmp_path: Path) -> None:
    src = write_parquet(tmp_path / "t.parquet", ROWS)
    col = Collection.create(tmp_path / "a.fr", encoder=None)
    col.add_files([src])
    col.commit()
    hits = col.search("owl forest", k=1, method="bm25")
    assert hits[0].id == "p1" and hits[0].metadata["year"] == 2021
    assert col.search("oven", k=1, method="bm25", filter={"year": {"$gte": 2022}})[0].id == "p2"
    col.close()

    res = CliRunner().invoke(main, ["index", str(src), "-c", str(tmp_path / "b.fr"),
                                    "--model", "none", "--no-progress"])
    assert res.exit_code == 0, (res.output, res.exception)
    out = Collection.open(tmp_path / "b.fr")
    try:
        assert {d.id for d in out.documents()} == {"p1", "p2", "t.parquet:3"}
    finally:
        out.close()
