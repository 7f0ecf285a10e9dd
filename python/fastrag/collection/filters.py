"""Metadata filters of collections, compiled to SQL over the documents' JSON metadata."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _json_value(value: Any, where: str) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a JSON number")
        return value
    raise ValueError(f"{where}: filter values must be str, number, bool or null, got {value!r}")


def compile_filter(spec: Mapping[str, Any]) -> tuple[str, list[Any], list[str]]:
    """A metadata filter -> (SQL condition on documents.metadata, parameters, field names).

    ``{"lang": "en"}`` (equality), ``{"year": {"$gte": 2000, "$lt": 2010}}`` (ranges: $gt,
    $gte, $lt, $lte, $ne, $eq), ``{"tag": {"$in": ["a", "b"]}}`` (in-list); several fields
    are ANDed. Nested fields are written with dots: ``{"source.kind": "pdf"}``.
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError("a filter is a non-empty dict such as {'lang': 'en'}")
    clauses, params, fields = [], [], []
    for name, cond in spec.items():
        if not isinstance(name, str) or not _FIELD.match(name):
            raise ValueError(f"filter field {name!r}: use letters, digits, _ and dots")
        path = f"$.{name}"
        fields.append(name)
        ops = cond if isinstance(cond, Mapping) else {"$eq": cond}
        if not ops:
            raise ValueError(f"filter on {name!r} is empty")
        for op, value in ops.items():
            where = f"filter on {name!r}"
            if op == "$in":
                if not isinstance(value, (list, tuple)) or not value:
                    raise ValueError(f"{where}: $in takes a non-empty list")
                values = [_json_value(v, where) for v in value]
                clauses.append(
                    f"json_extract(metadata, ?) IN ({', '.join('?' * len(values))})"
                )
                params += [path, *values]
            elif op in _OPS:
                v = _json_value(value, where)
                if v is None:
                    raise ValueError(f"{where}: compare with null is not supported")
                # compare like with like: SQLite orders every text above every number
                kinds = ("'true','false'" if isinstance(v, bool) else
                         "'integer','real'" if isinstance(v, (int, float)) else "'text'")
                clauses.append(
                    f"(json_type(metadata, ?) IN ({kinds}) AND json_extract(metadata, ?) "
                    f"{_OPS[op]} ?)"
                )
                params += [path, path, v]
            else:
                raise ValueError(
                    f"{where}: unknown operator {op!r}; use $in, {', '.join(_OPS)}"
                )
    return " AND ".join(clauses), params, fields
