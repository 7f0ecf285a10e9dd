"""Metadata filters of collections, compiled to SQL over the documents' JSON metadata.

The filter language follows MongoDB's query operators (as Qdrant and Chroma filters do):

* ``{"lang": "en"}`` -- equality (``$eq``); several fields in one dict are ANDed.
* ``{"year": {"$gte": 2000, "$lt": 2010}}`` -- ``$gt $gte $lt $lte`` compare numbers with
  numbers and strings with strings (a ``"1990"`` string never passes ``{"$lt": 2000}``).
* ``{"lang": {"$ne": "en"}}`` -- not equal; a document *without* the field matches, as in
  MongoDB.
* ``{"tag": {"$in": ["a", "b"]}}`` / ``{"tag": {"$nin": ["a", "b"]}}`` -- one of / none of
  the values (``$nin`` also matches documents without the field).
* ``{"src.kind": {"$exists": True}}`` -- the field is present (even as null) or absent.
* ``{"$and": [f1, f2]}``, ``{"$or": [f1, f2]}``, ``{"$nor": [f1, f2]}`` -- filters combined.
* ``{"year": {"$not": {"$gte": 2000}}}`` -- the opposite of the operators inside (documents
  without the field match), and ``{"$not": filter}`` for a whole filter.
* Nested fields are written with dots: ``{"source.kind": "pdf"}``.

Values are str, int, float or bool; equality is typed (``True`` never equals ``1``, ``2000``
equals ``2000.0``). A field holding an array matches when one of its elements does, as in
MongoDB: ``{"tags": "a"}`` finds ``{"tags": ["a", "b"]}``, ``{"tags": {"$ne": "a"}}`` does not.
An object is not a value: compare its fields with dotted paths.
Bad filters raise ValueError naming the problem: an unknown operator, NaN or infinity, a list
where a value is expected, null (use ``$exists``), an empty ``$in`` / ``$and``. The SQL is
built from parameters only (field paths included), never from the filter's text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["compile_filter"]

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_COMPARE = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_FIELD_OPS = (*_COMPARE, "$in", "$nin", "$exists", "$not")
_LOGIC = ("$and", "$or", "$nor", "$not")
_MAX_DEPTH = 32  # nesting of $and / $or / $not: far beyond any real filter
_INT64 = (-(2**63), 2**63 - 1)


class _Compiled:
    """The SQL pieces of one filter: parameters in order, and the fields it reads."""

    def __init__(self) -> None:
        self.params: list[Any] = []
        self.fields: list[str] = []  # fields whose values are compared (typo check)


def _value(value: Any, where: str) -> Any:
    """A filter value: str, finite number or bool."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{where}: {value} does not fit in a 64-bit integer")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a JSON number")
        return value
    if value is None:
        raise ValueError(f"{where}: compare with null is not supported; use {{'$exists': ...}}")
    raise ValueError(f"{where}: filter values must be str, number or bool, got {value!r}")


def _kinds(value: Any) -> str:
    """The JSON types SQLite reports for values comparable with `value`."""
    if isinstance(value, bool):
        return "'true','false'"
    if isinstance(value, (int, float)):
        return "'integer','real'"
    return "'text'"


def _compare(out: _Compiled, path: str, op: str, value: Any, where: str) -> str:
    v = _value(value, where)
    if op != "$eq" and op != "$ne" and isinstance(v, bool):
        raise ValueError(f"{where}: {op} compares numbers or strings, not {v!r}")
    # typed: the JSON type must match, so text is never compared with numbers (SQLite orders
    # every text above every number) and true is never 1
    out.params += [path, path, v]
    sql = _any_value(f"e.type IN ({_kinds(v)}) AND e.value {{}} ?")
    if op == "$ne":  # MongoDB: documents without the field, or with another value, match
        return f"NOT {sql.format('=')}"
    return sql.format(_COMPARE[op])


def _any_value(condition: str) -> str:
    """SQL that is TRUE when the field (the first parameter) holds a value meeting
    `condition` on ``e.type`` / ``e.value`` -- or, for an array, one of its elements does,
    as in MongoDB -- and FALSE otherwise (never NULL: a missing field is FALSE, so that a
    NOT (...) of it is TRUE). An object is never a value (json_each would list its members).
    """
    return ("(IFNULL(json_type(metadata, ?), 'object') <> 'object' AND EXISTS (SELECT 1 FROM "
            f"json_each(metadata, ?) AS e WHERE {condition}))")


def _member(out: _Compiled, path: str, values: Any, where: str, op: str) -> str:
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{where}: {op} takes a non-empty list of values, got {values!r}")
    groups: dict[str, list[Any]] = {}
    for v in values:
        v = _value(v, where)
        groups.setdefault(_kinds(v), []).append(v)
    # one JSON array parameter per type: any number of values, typed equality
    parts = []
    out.params += [path, path]
    for kinds, group in groups.items():
        out.params.append(json.dumps(group))
        parts.append(f"(e.type IN ({kinds}) AND e.value IN (SELECT value FROM json_each(?)))")
    sql = _any_value(" OR ".join(parts))
    return f"NOT {sql}" if op == "$nin" else sql


def _exists(out: _Compiled, path: str, value: Any, where: str) -> str:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: $exists takes true or false, got {value!r}")
    out.params.append(path)
    return f"(json_type(metadata, ?) IS {'NOT ' if value else ''}NULL)"


def _field(out: _Compiled, name: Any, cond: Any, depth: int) -> str:
    if depth > _MAX_DEPTH:
        raise ValueError(f"the filter nests deeper than {_MAX_DEPTH} levels")
    if not isinstance(name, str) or not _FIELD.match(name):
        raise ValueError(f"filter field {name!r}: use letters, digits, _ and dots")
    where = f"filter on {name!r}"
    path = f"$.{name}"
    if isinstance(cond, Mapping) and cond and any(
        isinstance(op, str) and op.startswith("$") for op in cond
    ):
        ops = cond
    elif isinstance(cond, Mapping):
        if not cond:
            raise ValueError(f"{where} is empty")
        raise ValueError(f"{where}: unknown operator {next(iter(cond))!r}; use "
                         f"{', '.join(_FIELD_OPS)}")
    else:
        ops = {"$eq": cond}
    clauses = []
    for op, value in ops.items():
        if op in _COMPARE:
            clauses.append(_compare(out, path, op, value, where))
        elif op in ("$in", "$nin"):
            clauses.append(_member(out, path, value, where, op))
        elif op == "$exists":
            clauses.append(_exists(out, path, value, where))
            continue  # a field asked about by $exists only may well be absent everywhere
        elif op == "$not":
            if not isinstance(value, Mapping) or not value:
                raise ValueError(f"{where}: $not takes operators, e.g. {{'$not': {{'$gt': 5}}}}")
            clauses.append(f"NOT {_field(out, name, value, depth + 1)}")
        else:
            raise ValueError(f"{where}: unknown operator {op!r}; use {', '.join(_FIELD_OPS)}")
        if name not in out.fields:
            out.fields.append(name)
    return f"({' AND '.join(clauses)})"


def _filter(out: _Compiled, spec: Any, depth: int, where: str = "a filter") -> str:
    if depth > _MAX_DEPTH:
        raise ValueError(f"the filter nests deeper than {_MAX_DEPTH} levels")
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"{where} is a non-empty dict such as {{'lang': 'en'}}, got {spec!r}")
    clauses = []
    for key, cond in spec.items():
        if isinstance(key, str) and key.startswith("$"):
            if key == "$not":
                clauses.append(f"NOT {_filter(out, cond, depth + 1, '$not')}")
                continue
            if key not in _LOGIC:
                raise ValueError(f"unknown operator {key!r} at the top of a filter; use "
                                 f"{', '.join(_LOGIC)} there, or a field name")
            if not isinstance(cond, (list, tuple)) or not cond:
                raise ValueError(f"{key} takes a non-empty list of filters, got {cond!r}")
            parts = [_filter(out, c, depth + 1, f"each filter in {key}") for c in cond]
            joined = f"({' OR '.join(parts)})" if key != "$and" else f"({' AND '.join(parts)})"
            clauses.append(f"NOT {joined}" if key == "$nor" else joined)
        else:
            clauses.append(_field(out, key, cond, depth))
    return f"({' AND '.join(clauses)})"


def compile_filter(spec: Mapping[str, Any]) -> tuple[str, list[Any], list[str]]:
    """A metadata filter -> (SQL condition on documents.metadata, parameters, field names).

    The language is described in the module docstring. Every sub-condition is TRUE or FALSE
    (never NULL), so a negation of it is exact. The field names returned are those whose
    values the filter compares (a caller refuses a name no document has: a typo, most
    likely); fields only asked about with ``$exists`` are left out.
    """
    out = _Compiled()
    sql = _filter(out, spec, 0)
    return sql, out.params, out.fields
