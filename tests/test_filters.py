"""Metadata filters with MongoDB's semantics (issue 17, item 9): $ne and $nin match documents
that lack the field; $exists, $and, $or, $nor and $not; typed equality; all still compiled to
SQL allow-lists. Checked against a small Python implementation of MongoDB's rules on seeded
random metadata, and bad filters against their error messages."""

from __future__ import annotations

import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fastrag.collection import Collection, compile_filter

_MISSING = object()


def _get(meta: dict[str, Any], name: str) -> Any:
    value: Any = meta
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _same(a: Any, b: Any) -> bool:
    """MongoDB equality of scalars: typed (True is not 1), 2000 == 2000.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _ordered(a: Any, b: Any) -> bool:
    """Whether $gt and friends compare a and b (numbers with numbers, strings with strings)."""
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    both_numbers = isinstance(a, num) and isinstance(b, num)
    return both_numbers or (isinstance(a, str) and isinstance(b, str))


def _values(v: Any) -> list[Any]:
    """What a condition looks at: the value, or an array's elements; nothing for an object."""
    if v is _MISSING or isinstance(v, dict):
        return []
    return [e for e in v if not isinstance(e, (list, dict))] if isinstance(v, list) else [v]


def _compare(v: Any, op: str, want: Any) -> bool:
    return _ordered(v, want) and {"$gt": v > want, "$gte": v >= want, "$lt": v < want,
                                  "$lte": v <= want}[op]


def _ops(v: Any, ops: dict[str, Any]) -> bool:
    values = _values(v)
    for op, want in ops.items():
        if op == "$eq":
            ok = any(_same(x, want) for x in values)
        elif op == "$ne":
            ok = not any(_same(x, want) for x in values)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            ok = any(_compare(x, op, want) for x in values)
        elif op == "$in":
            ok = any(_same(x, w) for x in values for w in want)
        elif op == "$nin":
            ok = not any(_same(x, w) for x in values for w in want)
        elif op == "$exists":
            ok = (v is not _MISSING) == want
        elif op == "$not":
            ok = not _ops(v, want)
        else:
            raise AssertionError(op)
        if not ok:
            return False
    return True


def mongo(meta: dict[str, Any], spec: dict[str, Any]) -> bool:
    """The oracle: MongoDB's matching rules for the operators fastrag supports."""
    for key, cond in spec.items():
        if key == "$and":
            ok = all(mongo(meta, c) for c in cond)
        elif key == "$or":
            ok = any(mongo(meta, c) for c in cond)
        elif key == "$nor":
            ok = not any(mongo(meta, c) for c in cond)
        elif key == "$not":
            ok = not mongo(meta, cond)
        else:
            is_ops = isinstance(cond, dict) and any(k.startswith("$") for k in cond)
            ok = _ops(_get(meta, key), cond if is_ops else {"$eq": cond})
        if not ok:
            return False
    return True


def _metadata(rng: random.Random, i: int) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if rng.random() < 0.85:
        meta["lang"] = rng.choice(["en", "ja", "de"])
    if rng.random() < 0.8:
        meta["year"] = rng.choice([rng.randint(1990, 2020), float(rng.randint(1990, 2020)),
                                   str(rng.randint(1990, 2020))])
    if rng.random() < 0.6:
        meta["src"] = {"kind": rng.choice(["pdf", "html"]), "pages": rng.randint(1, 50)}
    if rng.random() < 0.5:
        meta["flag"] = rng.choice([True, False, 1, 0])
    if rng.random() < 0.2:
        meta["note"] = None
    if rng.random() < 0.7:
        meta["tags"] = rng.sample(["a", "b", "c", 1, 2.5, True, ["a"]], rng.randint(0, 3))
    return meta


@pytest.fixture(scope="module")
def col(tmp_path_factory: pytest.TempPathFactory) -> Any:
    rng = random.Random(9)
    metas = [_metadata(rng, i) for i in range(120)]
    ids = [f"d{i:03d}" for i in range(120)]
    texts = [("common alpha\n\n" * rng.randint(1, 3)).strip() for _ in ids]
    col = Collection.create(Path(tmp_path_factory.mktemp("flt")) / "c", encoder=None,
                            chunk_chars=20)
    col.add(texts, ids=ids, metadata=metas)
    col.commit()
    yield col, dict(zip(ids, metas, strict=True))
    col.close()


def matched(col: Collection, spec: dict[str, Any]) -> list[str]:
    return sorted({h.doc for h in col.chunks_of(col.allowed_chunks(spec)).values()})


FILTERS: list[dict[str, Any]] = [
    {"lang": {"$ne": "en"}},                          # documents without lang match too
    {"lang": {"$nin": ["en", "de"]}},
    {"lang": {"$in": ["en", "de"]}},
    {"lang": {"$exists": False}},
    {"src.kind": {"$exists": True}},
    {"note": {"$exists": True}},                      # a null value exists
    {"year": {"$gte": 2000, "$lt": 2010}},            # ints and floats, never the strings
    {"year": "2005"},                                 # the strings only
    {"year": {"$ne": 2005}},
    {"year": {"$not": {"$gte": 2000}}},               # older, a string, or no year
    {"flag": True},                                   # not 1
    {"flag": 1},                                      # not True
    {"flag": {"$in": [True, 0]}},
    {"$or": [{"lang": "ja"}, {"src.pages": {"$lt": 10}}]},
    {"$and": [{"lang": {"$ne": "ja"}}, {"$or": [{"flag": False}, {"src.kind": "pdf"}]}]},
    {"$nor": [{"lang": "en"}, {"year": {"$exists": False}}]},
    {"$not": {"lang": "en", "src.kind": "pdf"}},
    {"lang": "en", "$or": [{"year": {"$lt": 2000}}, {"year": {"$gt": 2015}}]},
    {"src.pages": {"$gt": 10, "$ne": 20}, "lang": {"$nin": ["de"]}},
    {"tags": "a"},                                    # an element of the array
    {"tags": {"$ne": "a"}},                           # no element is "a" (or no tags)
    {"tags": {"$in": ["b", 1]}},                      # 1, not True
    {"tags": {"$nin": ["a", "c"]}},
    {"tags": {"$gt": 2}},                             # 2.5
    {"tags": True},
    {"src": {"$ne": "pdf"}, "lang": "en"},            # an object is not a value: every en
]


@pytest.mark.parametrize("spec", FILTERS, ids=[str(f) for f in FILTERS])
def test_filters_follow_mongodb(col: Any, spec: dict[str, Any]) -> None:
    c, metas = col
    want = sorted(d for d, m in metas.items() if mongo(m, spec))
    assert 0 < len(want) < len(metas), "each filter should match some documents, not all"
    assert matched(c, spec) == want
    # the allow-list reaches the search: the same documents come back, and only them
    assert sorted(r.id for r in c.search("common", k=200, method="bm25", filter=spec)) == want


def test_ne_keeps_documents_without_the_field(col: Any) -> None:
    c, metas = col
    without = {d for d, m in metas.items() if "lang" not in m}
    assert without
    assert without <= set(matched(c, {"lang": {"$ne": "en"}}))
    assert without <= set(matched(c, {"lang": {"$nin": ["en"]}}))
    assert not without & set(matched(c, {"lang": {"$in": ["en", "ja", "de"]}}))


def test_a_long_in_list_is_one_parameter_per_type() -> None:
    sql, params, fields = compile_filter({"n": {"$in": [*range(100_000), "x"]}})
    assert len(params) == 4 and fields == ["n"]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE documents (metadata TEXT)")
    db.executemany("INSERT INTO documents VALUES (?)",
                   [('{"n": 5}',), ('{"n": "x"}',), ('{"n": "5"}',), ('{}',), ('{"n": 1e6}',),
                    ('{"n": [1e6, "x"]}',), ('{"n": {"m": 5}}',)])
    got = db.execute(f"SELECT metadata FROM documents WHERE {sql}", params).fetchall()
    assert [r[0] for r in got] == ['{"n": 5}', '{"n": "x"}', '{"n": [1e6, "x"]}']


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"lang": {"$regex": "e.*"}}, "unknown operator '\\$regex'"),
        ({"$where": "1"}, "unknown operator '\\$where' at the top"),
        ({"lang": {"$in": []}}, r"\$in takes a non-empty list"),
        ({"lang": {"$nin": "en"}}, r"\$nin takes a non-empty list"),
        ({"lang": {"$exists": 1}}, r"\$exists takes true or false"),
        ({"$or": []}, r"\$or takes a non-empty list"),
        ({"$and": {"lang": "en"}}, r"\$and takes a non-empty list"),
        ({"$or": [{"lang": "en"}, {}]}, "each filter in \\$or is a non-empty dict"),
        ({"$or": [{"lang": "en"}, "ja"]}, "each filter in \\$or is a non-empty dict"),
        ({"lang": {"$not": "en"}}, r"\$not takes operators"),
        ({"$not": []}, "\\$not is a non-empty dict"),
        ({"year": math.nan}, "not a JSON number"),
        ({"year": {"$gt": -math.inf}}, "not a JSON number"),
        ({"year": {"$in": [2000, math.nan]}}, "not a JSON number"),
        ({"year": 2**70}, "64-bit"),
        ({"year": {"$gt": True}}, "compares numbers or strings"),
        ({"lang": ["en"]}, "filter values"),
        ({"lang": {"sub": 1}}, "unknown operator 'sub'"),
        ({"lang": {"$ne": None}}, "null.*\\$exists"),
        ({"a;DROP TABLE documents": 1}, "field"),
        ({"nosuchfield": {"$ne": 1}}, "no document has"),
        ({"$or": [{"lang": "en"}, {"nosuch": 1}]}, "no document has the metadata field 'nosuch'"),
        ({}, "non-empty"),
        ([("lang", "en")], "non-empty dict"),
    ],
)
def test_bad_filters_raise_and_change_nothing(col: Any, spec: Any, match: str) -> None:
    c, metas = col
    with pytest.raises(ValueError, match=match):
        c.search("common", k=5, filter=spec)
    assert len(c) == len(metas)


def test_exists_false_on_a_field_no_document_has_is_not_a_typo(col: Any) -> None:
    c, metas = col
    assert matched(c, {"nosuch": {"$exists": False}}) == sorted(metas)


def test_deep_nesting_is_refused() -> None:
    spec: dict[str, Any] = {"lang": "en"}
    for _ in range(40):
        spec = {"$not": spec}
    with pytest.raises(ValueError, match="nests deeper"):
        compile_filter(spec)


# ---------------------------------------------------------------------------- in memory
def _random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A random valid filter over the fields _metadata writes."""
    values = ["en", "ja", "a", "b", "2005", 1, 0, 2.5, 2005, 1999.0, True, False]
    field = rng.choice(["lang", "year", "src.kind", "src.pages", "flag", "tags", "note", "src"])
    roll = rng.random()
    if depth < 2 and roll < 0.2:
        op = rng.choice(["$and", "$or", "$nor"])
        return {op: [_random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    if depth < 2 and roll < 0.27:
        return {"$not": _random_filter(rng, depth + 1)}
    op = rng.choice(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists",
                     "$not"])
    if op in ("$in", "$nin"):
        return {field: {op: rng.sample(values, rng.randint(1, 3))}}
    if op == "$exists":
        return {field: {op: rng.random() < 0.5}}
    if op == "$not":
        return {field: {op: {"$gte": rng.choice([1995, 2005.5, "2001"])}}}
    value = rng.choice(values)
    if op not in ("$eq", "$ne") and isinstance(value, bool):
        value = 2000
    return {field: {op: value}}


def test_in_memory_filters_equal_the_sql(col: Any) -> None:
    """The committed documents are filtered in memory (metaindex.py): the same chunks as
    the SQL over their JSON, for the listed filters and 400 random ones."""
    c, _ = col
    rng = random.Random(5)
    specs = FILTERS + [_random_filter(rng) for _ in range(400)]
    for spec in specs:
        docs = c._docs
        assert not docs.pending
        try:
            sql = sorted(c._allowed_sql(spec))
        except ValueError as e:  # a field no document has: the same error both ways
            with pytest.raises(ValueError, match=str(e).split(":")[0]):
                c._allowed_in_memory(docs, spec)
            continue
        assert sorted(c._allowed_in_memory(docs, spec)) == sql, spec


def test_pending_changes_and_huge_integers_are_filtered_in_sql(tmp_path: Path) -> None:
    c = Collection.create(tmp_path / "c", encoder=None)
    c.add(["one", "two", "three"], ids=["a", "b", "c"],
          metadata=[{"n": 2**60}, {"n": 2**60 + 1}, {"n": 5, "k": "x"}])
    c.commit()
    # 2**60 and 2**60 + 1 are one float64: the columns cannot tell them apart, SQLite can
    assert matched(c, {"n": 2**60 + 1}) == ["b"]
    assert matched(c, {"n": {"$gt": 2**60}}) == ["b"]
    assert matched(c, {"k": "x"}) == ["c"]
    c.add(["four"], ids=["d"], metadata=[{"k": "x"}])  # uncommitted: the SQL sees it
    assert c._docs.pending
    assert matched(c, {"k": "x"}) == ["c", "d"]
    c.commit()
    assert not c._docs.pending and matched(c, {"k": "x"}) == ["c", "d"]
    c.delete(["c"])
    c.commit()
    assert matched(c, {"k": "x"}) == ["d"]
    c.close()
