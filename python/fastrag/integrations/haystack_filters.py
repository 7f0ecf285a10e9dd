"""Haystack 2 filters ({"field": "meta.x", "operator": "==", "value": ...} and
{"operator": "AND", "conditions": [...]}) as fastrag metadata filters.

The meaning is Haystack's (`haystack.utils.filters`): a missing field and a field holding
None are the same (the document store keeps None values out of the metadata fastrag
filters on, so "is None" is ``$exists: false``); ``>`` and friends compare numbers, or ISO
8601 dates given as strings (compared as text by fastrag: write them in one format and time
zone); a comparison with None is false; ``in`` / ``not in`` take a list; an empty AND is
true, an empty OR false. A field that no document holds is None everywhere, and a condition
on it becomes a constant (fastrag would refuse it as a likely typo). Only ``meta.*`` fields
can be filtered on. Malformed filters raise Haystack's `FilterError`. One difference: a
field holding a list matches ``==`` when one of its elements does (MongoDB's rule, as
everywhere in fastrag), where Haystack compares the whole list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from fastrag.integrations._common import missing_extra

try:
    from haystack.errors import FilterError
except ImportError as e:  # without the extra (tests/test_integration_extras.py)
    raise ImportError(missing_extra("Haystack", "haystack-ai", "haystack")) from e

__all__ = ["HIDDEN", "to_fastrag_filter"]

#: the metadata key that holds what a fastrag document has no field for (embeddings, ...)
HIDDEN = "_haystack"
_TRUE: dict[str, Any] = {"$or": [{HIDDEN: {"$exists": True}}, {HIDDEN: {"$exists": False}}]}
_FALSE: dict[str, Any] = {"$nor": [_TRUE]}
_ORDER = {">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}
_LOGIC = ("AND", "OR", "NOT")
_COMPARE = ("==", "!=", *_ORDER, "in", "not in")


def to_fastrag_filter(filters: Mapping[str, Any],
                      known: Callable[[str], bool]) -> dict[str, Any]:
    """A Haystack filter as a fastrag filter. `known(field)` says whether some document
    holds the (dotted) metadata field."""
    return _node(filters, known, 0)


def _node(spec: Any, known: Callable[[str], bool], depth: int) -> dict[str, Any]:
    if depth > 32:
        raise FilterError("the filter nests deeper than 32 levels")
    if not isinstance(spec, Mapping):
        raise FilterError(f"a filter is a dict, got {spec!r}")
    if "field" in spec:
        return _comparison(spec, known)
    if "operator" not in spec:
        raise FilterError(f"a logical filter needs 'operator' (one of {', '.join(_LOGIC)}): "
                          f"{dict(spec)!r}")
    if "conditions" not in spec:
        raise FilterError(f"a logical filter needs 'conditions', a list of filters: "
                          f"{dict(spec)!r}")
    op, conditions = spec["operator"], spec["conditions"]
    if op not in _LOGIC:
        raise FilterError(f"unknown logical operator {op!r}; use {', '.join(_LOGIC)}")
    if not isinstance(conditions, list):
        raise FilterError(f"'conditions' must be a list of filters, got {conditions!r}")
    parts = [_node(c, known, depth + 1) for c in conditions]
    if op == "OR":
        return {"$or": parts} if parts else _FALSE
    every = {"$and": parts} if parts else _TRUE
    return every if op == "AND" else {"$nor": [every]}


def _comparison(spec: Mapping[str, Any], known: Callable[[str], bool]) -> dict[str, Any]:
    for key in ("operator", "value"):
        if key not in spec:
            raise FilterError(f"a comparison needs 'field', 'operator' and 'value': "
                              f"{dict(spec)!r}")
    field, op, value = spec["field"], spec["operator"], spec["value"]
    if op not in _COMPARE:
        raise FilterError(f"unknown comparison operator {op!r}; use {', '.join(_COMPARE)}")
    if not isinstance(field, str) or not field.startswith("meta.") or field == "meta.":
        raise FilterError(f"fastrag filters on metadata: use a field 'meta.<name>', got "
                          f"{field!r}")
    name = field.removeprefix("meta.")
    if name == HIDDEN or name.startswith(HIDDEN + "."):
        raise FilterError(f"{HIDDEN!r} is the document store's own metadata field")
    _check_value(op, value)
    if value is None:
        if op in _ORDER:
            return _FALSE
        return {name: {"$exists": op == "!="}}
    if not known(name):  # None in every document
        return _TRUE if op in ("!=", "not in") else _FALSE
    if op in ("==", "!="):
        return {name: {"$eq" if op == "==" else "$ne": value}}
    if op in _ORDER:
        return {name: {_ORDER[op]: value}}
    return _membership(name, op, value)


def _check_value(op: str, value: Any) -> None:
    if op in ("in", "not in"):
        if not isinstance(value, list):
            raise FilterError(f"'{op}' takes a list of values, got {value!r}")
        for v in value:
            _scalar(op, v)
        return
    _scalar(op, value)
    if op in _ORDER:
        if isinstance(value, bool):
            raise FilterError(f"'{op}' compares numbers or ISO dates, not {value!r}")
        if isinstance(value, str):
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise FilterError(f"'{op}' compares strings only when they are ISO 8601 dates, "
                                  f"got {value!r}") from None


def _scalar(op: str, value: Any) -> None:
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise FilterError(f"'{op}' compares str, number, bool or None values, got {value!r}")


def _membership(name: str, op: str, values: list[Any]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    parts: list[dict[str, Any]] = []
    if present:
        parts.append({name: {"$in": present}})
    if len(present) < len(values):  # None in the list: a missing field is one of the values
        parts.append({name: {"$exists": False}})
    anyof = _FALSE if not parts else parts[0] if len(parts) == 1 else {"$or": parts}
    return anyof if op == "in" else {"$nor": [anyof]}
