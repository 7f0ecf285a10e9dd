"""Metadata filters evaluated in memory: the committed documents' metadata as columns.

`compile_filter` (filters.py) turns a filter into SQL over every document's JSON, which
SQLite parses again for each query (about half a second for 200,000 documents). A
`MetaIndex` parses the metadata of one generation once and keeps, per field path asked
about, which documents hold the field and the values they hold (array elements one by
one), so that a filter is a few numpy operations over the documents. The semantics are
those of the SQL (the property tests hold the two to each other):

* a path reaches into objects only (``a.b`` on ``{"a": [{"b": 1}]}`` finds nothing);
* a field's values are its scalar, or the scalars of its array; an object, null, or an
  array inside the array is no value;
* comparisons are typed: bools with bools (equality only), numbers with numbers, strings
  with strings (code point order, which is UTF-8 byte order).

What the columns cannot answer exactly -- integers beyond 2**53, which float64 would
round -- raises `Unsupported`, and the caller runs the SQL instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fastrag.collection.filters import compile_filter

__all__ = ["MetaIndex", "Unsupported"]

_EXACT = 2**53  # float64 holds every integer up to here


class Unsupported(Exception):
    """The filter or the metadata needs the SQL path."""


def _number(v: Any) -> float:
    if isinstance(v, int) and abs(v) > _EXACT:
        raise Unsupported
    return float(v)


class _Column:
    """One field path over every document: present (even as null), and its values by kind
    as (document, value) pairs plus, for equality, value -> documents."""

    def __init__(self, n: int, metas: Sequence[Mapping[str, Any]], path: list[str]) -> None:
        self.present = np.zeros(n, dtype=bool)
        num_docs: list[int] = []
        num_vals: list[float] = []
        txt_docs: list[int] = []
        txt_vals: list[str] = []
        eq: dict[tuple[str, Any], list[int]] = {}
        for i, meta in enumerate(metas):
            node: Any = meta
            for key in path:
                if not isinstance(node, dict) or key not in node:
                    break
                node = node[key]
            else:
                self.present[i] = True
                if isinstance(node, dict):
                    continue
                for v in node if isinstance(node, list) else (node,):
                    if isinstance(v, bool):
                        eq.setdefault(("bool", v), []).append(i)
                    elif isinstance(v, (int, float)):
                        x = _number(v)
                        if not math.isfinite(x):
                            raise Unsupported
                        num_docs.append(i)
                        num_vals.append(x)
                        eq.setdefault(("num", x), []).append(i)
                    elif isinstance(v, str):
                        txt_docs.append(i)
                        txt_vals.append(v)
                        eq.setdefault(("text", v), []).append(i)
        self.eq_docs = {key: np.array(docs, dtype=np.int64) for key, docs in eq.items()}
        self.n = n
        self.num = (np.array(num_docs, dtype=np.int64), np.array(num_vals, dtype=np.float64))
        self.txt = (np.array(txt_docs, dtype=np.int64), np.array(txt_vals, dtype=object))

    def docs_where(self, docs: np.ndarray, hit: np.ndarray) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        out[docs[hit]] = True
        return out

    def equal(self, v: Any) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        key = ("bool", v) if isinstance(v, bool) else (
            ("num", _number(v)) if isinstance(v, (int, float)) else ("text", v))
        found = self.eq_docs.get(key)
        if found is not None:
            out[found] = True
        return out

    def compare(self, op: str, v: Any) -> np.ndarray:
        if op == "$eq":
            return self.equal(v)
        if isinstance(v, str):
            docs, vals = self.txt
        else:
            docs, vals = self.num
            v = _number(v)
        if op == "$gt":
            hit = vals > v
        elif op == "$gte":
            hit = vals >= v
        elif op == "$lt":
            hit = vals < v
        else:
            hit = vals <= v
        return self.docs_where(docs, np.asarray(hit, dtype=bool))


class MetaIndex:
    """The metadata of a fixed set of documents (one committed generation), for filters."""

    def __init__(self, metas: Sequence[Mapping[str, Any]]) -> None:
        self._metas = metas
        self.n = len(metas)
        self._columns: dict[str, _Column] = {}

    def column(self, name: str) -> _Column:
        col = self._columns.get(name)
        if col is None:
            try:
                col = _Column(self.n, self._metas, name.split("."))
            except Unsupported:
                self._columns[name] = None  # type: ignore[assignment]  # said once: use SQL
                raise
            self._columns[name] = col
        if col is None:
            raise Unsupported
        return col

    def has_field(self, name: str) -> bool:
        """Whether any document has a value (or null) at this path."""
        return bool(self.column(name).present.any())

    def mask(self, spec: Mapping[str, Any]) -> np.ndarray:
        """The documents (a bool per document) that match `spec`. Bad filters raise the
        ValueError that `compile_filter` raises; `Unsupported` means: use the SQL path."""
        _, _, fields = compile_filter(spec)  # every check of the filter language
        for name in fields:
            if not self.has_field(name):
                raise ValueError(f"no document has the metadata field {name!r}")
        return self._filter(spec)

    # the evaluation mirrors filters.py's compiler; the filter is known to be valid here
    def _filter(self, spec: Mapping[str, Any]) -> np.ndarray:
        out = np.ones(self.n, dtype=bool)
        for key, cond in spec.items():
            if key == "$not":
                out &= ~self._filter(cond)
            elif key in ("$and", "$or", "$nor"):
                parts = [self._filter(c) for c in cond]
                joined = np.logical_and.reduce(parts) if key == "$and" else np.logical_or.reduce(
                    parts)
                out &= ~joined if key == "$nor" else joined
            else:
                out &= self._field(key, cond)
        return out

    def _field(self, name: str, cond: Any) -> np.ndarray:
        col = self.column(name)
        ops = cond if isinstance(cond, Mapping) else {"$eq": cond}
        out = np.ones(self.n, dtype=bool)
        for op, value in ops.items():
            if op == "$ne":
                out &= ~col.equal(value)
            elif op in ("$in", "$nin"):
                hit = np.logical_or.reduce([col.equal(v) for v in value])
                out &= ~hit if op == "$nin" else hit
            elif op == "$exists":
                out &= col.present if value else ~col.present
            elif op == "$not":
                out &= ~self._field(name, value)
            else:
                out &= col.compare(op, value)
        return out
