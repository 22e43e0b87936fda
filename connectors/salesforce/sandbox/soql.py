"""The SOQL subset the sandbox answers: what a sync client sends, checked as Salesforce checks it.

``SELECT f[, Rel.f...] FROM Object [WHERE cond [AND cond...]] [ORDER BY f [ASC|DESC][, ...]]
[LIMIT n]``, where a condition is ``field op literal`` (``= != < <= > >=``) or ``field IN (...)``.
Literals follow the SOQL reference: ``'quoted'`` strings (backslash escapes), ``true``/``false``/
``null``, numbers, dates ``YYYY-MM-DD`` and datetimes ``YYYY-MM-DDThh:mm:ss[.sss](Z|+hh:mm|-hh:mm)``
(https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_dateformats.htm).
A query that does not parse is ``MALFORMED_QUERY``, an unknown field ``INVALID_FIELD``, an unknown
object ``INVALID_TYPE`` (REST API Developer Guide, errorcodes.htm).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from connectors.salesforce.wire import parse_datetime

__all__ = ["Condition", "Query", "SoqlError", "parse_query", "run_query"]

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))"
    r"|(?P<date>\d{4}-\d{2}-\d{2})|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>!=|<=|>=|=|<|>)|(?P<punct>[(),])"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)
_KEYWORDS = {"select", "from", "where", "and", "order", "by", "asc", "desc", "limit", "in"}


class SoqlError(Exception):
    """A query Salesforce refuses: ``code`` is its ``errorCode``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class Query:
    fields: tuple[str, ...]
    object: str
    where: tuple[Condition, ...]
    order: tuple[tuple[str, bool], ...]
    limit: int | None


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token at position {position}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        position = match.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.at] if self.at < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token[0] == "end":
            raise SoqlError("MALFORMED_QUERY", "unexpected end of query")
        self.at += 1
        return token

    def keyword(self, word: str) -> bool:
        kind, value = self.peek()
        if kind == "word" and value.lower() == word:
            self.at += 1
            return True
        return False

    def expect(self, word: str) -> None:
        if not self.keyword(word):
            raise SoqlError("MALFORMED_QUERY", f"expecting {word.upper()}, found {self.peek()[1]!r}")

    def name(self) -> str:
        kind, value = self.take()
        if kind != "word" or value.lower() in _KEYWORDS:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token {value!r}")
        return value

    def literal(self) -> Any:
        kind, value = self.take()
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", value[1:-1])
        if kind == "dt":
            return parse_datetime(value)
        if kind == "date":
            return date.fromisoformat(value)
        if kind == "num":
            return Decimal(value)
        if kind == "word" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if kind == "word" and value.lower() == "null":
            return None
        raise SoqlError("MALFORMED_QUERY", f"unexpected token {value!r}")

    def condition(self) -> Condition:
        field = self.name()
        if self.keyword("in"):
            if self.take() != ("punct", "("):
                raise SoqlError("MALFORMED_QUERY", "IN needs a list in parentheses")
            values = [self.literal()]
            while self.peek() == ("punct", ","):
                self.take()
                values.append(self.literal())
            if self.take() != ("punct", ")"):
                raise SoqlError("MALFORMED_QUERY", "unclosed IN list")
            return Condition(field, "in", tuple(values))
        kind, op = self.take()
        if kind != "op":
            raise SoqlError("MALFORMED_QUERY", f"expecting an operator, found {op!r}")
        return Condition(field, op, self.literal())

    def parse(self) -> Query:
        self.expect("select")
        fields = [self.name()]
        while self.peek() == ("punct", ","):
            self.take()
            fields.append(self.name())
        self.expect("from")
        obj = self.name()
        where: list[Condition] = []
        if self.keyword("where"):
            where.append(self.condition())
            while self.keyword("and"):
                where.append(self.condition())
        order: list[tuple[str, bool]] = []
        if self.keyword("order"):
            self.expect("by")
            while True:
                field = self.name()
                descending = self.keyword("desc")
                if not descending:
                    self.keyword("asc")
                order.append((field, descending))
                if self.peek() != ("punct", ","):
                    break
                self.take()
        limit = None
        if self.keyword("limit"):
            kind, value = self.take()
            if kind != "num" or not value.isdigit():
                raise SoqlError("MALFORMED_QUERY", "LIMIT needs a whole number")
            limit = int(value)
        if self.peek()[0] != "end":
            raise SoqlError("MALFORMED_QUERY", f"unexpected token {self.peek()[1]!r}")
        return Query(tuple(fields), obj, tuple(where), tuple(order), limit)


def parse_query(text: str) -> Query:
    """The parsed query; :class:`SoqlError` ``MALFORMED_QUERY`` when it does not parse."""
    return _Parser(text).parse()


def _value(row: Mapping[str, Any], field: str) -> Any:
    value: Any = row
    for part in field.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _comparable(value: Any, like: Any) -> Any:
    if isinstance(like, datetime):
        return parse_datetime(value)
    if isinstance(like, date) and isinstance(value, str):
        return date.fromisoformat(value[:10])
    if isinstance(like, Decimal) and value is not None and not isinstance(value, bool):
        return Decimal(str(value))
    return value


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a is not None and b is not None and a < b,
    "<=": lambda a, b: a is not None and b is not None and a <= b,
    ">": lambda a, b: a is not None and b is not None and a > b,
    ">=": lambda a, b: a is not None and b is not None and a >= b,
}


def _matches(row: Mapping[str, Any], condition: Condition) -> bool:
    value = _value(row, condition.field)
    if condition.op == "in":
        return any(_comparable(value, v) == v for v in condition.value)
    return _OPS[condition.op](_comparable(value, condition.value), condition.value)


def _sort_key(value: Any) -> tuple[int, Any]:
    moment = parse_datetime(value) if isinstance(value, str) else None
    if moment is not None:
        return (1, moment.timestamp())
    return (0, "") if value is None else (1, value)


def run_query(
    query: Query, rows: Sequence[Mapping[str, Any]], known_fields: frozenset[str]
) -> list[dict[str, Any]]:
    """The selected fields of the matching rows, ordered and limited (``INVALID_FIELD`` when a
    field is not one of ``known_fields``; relationship fields are checked on their first part)."""
    used = [*query.fields, *(c.field for c in query.where), *(f for f, _ in query.order)]
    for field in used:
        if field.split(".")[0] not in known_fields:
            raise SoqlError("INVALID_FIELD", f"No such column '{field}' on entity '{query.object}'")
    found = [row for row in rows if all(_matches(row, c) for c in query.where)]
    for field, descending in reversed(query.order):
        found.sort(key=lambda row, f=field: _sort_key(_value(row, f)), reverse=descending)  # type: ignore[misc]
    if query.limit is not None:
        found = found[: query.limit]
    out: list[dict[str, Any]] = []
    for row in found:
        record: dict[str, Any] = {}
        for field in query.fields:
            head, _, tail = field.partition(".")
            if tail:
                parent = row.get(head)
                record[head] = None if parent is None else {tail: _value(parent, tail)}
            else:
                record[field] = row.get(field)
        out.append(record)
    return out
