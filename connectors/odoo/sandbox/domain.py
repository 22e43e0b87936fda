"""Odoo search domains, evaluated over the sandbox's in-memory records.

A domain is a list in prefix (Polish) notation: leaves ``[field, operator, value]`` joined by an
implicit ``&``, with ``"&"``, ``"|"`` (binary) and ``"!"`` (unary) as prefix operators. Operators
served: ``= != > >= < <= in not in like ilike =like =ilike``. Datetime fields compare as times
(a value ``"YYYY-MM-DD HH:MM:SS"`` against stored times that may carry a fraction), many2one fields by
id. ORM reference: https://www.odoo.com/documentation/18.0/developer/reference/backend/orm.html#search-domains
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["DomainError", "matches", "mentions"]

Kind = str  # "char", "bool", "float", "int", "datetime", "date", "m2o", "m2m", "selection"
_LOGIC = frozenset({"&", "|", "!"})


class DomainError(ValueError):
    """A domain the ORM would refuse (``Invalid leaf``, ``Invalid field``)."""


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace(" ", "T", 1))
        except ValueError as exc:
            raise DomainError(f"Invalid datetime value {value!r}") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _like(pattern: str, value: Any, *, case: bool, exact: bool) -> bool:
    text = "" if value in (None, False) else str(value)
    if not exact:
        pattern = f"%{pattern}%"
    glob = pattern.replace("*", "[*]").replace("?", "[?]").replace("%", "*").replace("_", "?")
    if not case:
        return fnmatch.fnmatchcase(text.casefold(), glob.casefold())
    return fnmatch.fnmatchcase(text, glob)


def _compare(kind: Kind, stored: Any, operator: str, value: Any) -> bool:
    if kind == "datetime":
        stored, value = _time(stored), (_time(value) if not isinstance(value, list) else value)
    if kind == "m2m":
        ids = set(stored or [])
        wanted = set(value if isinstance(value, list) else [value])
        if operator == "in" or operator == "=":
            return bool(ids & wanted)
        if operator == "not in" or operator == "!=":
            return not ids & wanted
        raise DomainError(f"Invalid operator {operator!r} for a many2many")
    if stored is False:
        stored = None
    if value is False:
        value = None
    if operator == "=":
        return bool(stored == value)
    if operator == "!=":
        return bool(stored != value)
    if operator in ("in", "not in"):
        if not isinstance(value, list):
            raise DomainError(f"Invalid leaf: {operator!r} needs a list")
        found = stored in value or (stored is None and False in value)
        return found if operator == "in" else not found
    if operator in ("like", "ilike", "=like", "=ilike"):
        return _like(str(value), stored, case="i" not in operator, exact=operator.startswith("="))
    if operator in (">", ">=", "<", "<="):
        if stored is None or value is None:
            return False
        ops: Mapping[str, Callable[[Any, Any], bool]] = {
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
        }
        return ops[operator](stored, value)
    raise DomainError(f"Invalid operator {operator!r}")


def _leaf(term: Any, record: Mapping[str, Any], fields: Mapping[str, Kind]) -> bool:
    if not isinstance(term, list | tuple) or len(term) != 3 or not isinstance(term[0], str):
        raise DomainError(f"Invalid leaf {term!r}")
    name, operator, value = term
    if name not in fields:
        raise DomainError(f"Invalid field {name!r} in leaf {term!r}")
    if isinstance(value, tuple):
        value = list(value)
    return _compare(fields[name], record.get(name), str(operator).lower(), value)


def matches(domain: Sequence[Any], record: Mapping[str, Any], fields: Mapping[str, Kind]) -> bool:
    """True when ``record`` satisfies ``domain``; :class:`DomainError` when it is malformed."""
    stack: list[bool] = []
    for term in reversed(list(domain)):
        if isinstance(term, str) and term in _LOGIC:
            if term == "!":
                if not stack:
                    raise DomainError("Invalid domain: '!' without an operand")
                stack.append(not stack.pop())
                continue
            if len(stack) < 2:
                raise DomainError(f"Invalid domain: {term!r} needs two operands")
            first, second = stack.pop(), stack.pop()
            stack.append(first and second if term == "&" else first or second)
        else:
            stack.append(_leaf(term, record, fields))
    return all(stack)


def mentions(domain: Sequence[Any], name: str) -> bool:
    """True when a leaf of ``domain`` names field ``name`` (``active`` turns ``active_test`` off)."""
    return any(isinstance(t, list | tuple) and len(t) == 3 and t[0] == name for t in domain)
