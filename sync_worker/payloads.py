"""Hostile-input-safe decoding of webhook bodies, for the connectors' parsers.

A webhook body comes from the internet: whatever it holds, decoding it either gives plain JSON
data the rest of the service can store and serialise again, or raises
:class:`~sync_worker.errors.PayloadError` (a 400) naming the problem. Never another exception (a
5xx), and never data that fails later, in the store or a worker:

- strict UTF-8 (no UTF-16/32 guessing, no lone surrogates, no NUL, which PostgreSQL refuses);
- no ``NaN`` / ``Infinity`` (not JSON; Python's :mod:`json` accepts them), no float that
  overflows to infinity (``1e999``);
- integers of at most :data:`MAX_INT_DIGITS` digits (no provider id or time is longer; Python
  refuses to convert more than 4,300 digits with a ``ValueError``);
- at most :data:`MAX_DEPTH` levels of nesting (refused before :mod:`json`'s recursion limit, so
  re-serialising the data can never hit it either).

:func:`epoch_time` turns an epoch number into an aware UTC time with the same contract (a
timestamp past year 9999 is a ``PayloadError``, not an ``OverflowError``).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Final, NoReturn

from sync_worker.errors import PayloadError

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "decode_json", "epoch_time"]

MAX_DEPTH: Final = 64
MAX_INT_DIGITS: Final = 40


def _refuse_constant(name: str) -> NoReturn:
    raise PayloadError(f"{name} is not a JSON number")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise PayloadError(f"an integer of {len(text)} digits is too long (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError(f"the number {text[:20]} is out of range")
    return value


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise PayloadError("a string holds a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError("a string holds an unpaired surrogate escape") from None


def _check(data: Any) -> None:
    """Depth and string checks without recursion (the data may be as deep as json allowed)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise PayloadError(f"nested more than {MAX_DEPTH} levels deep")
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_text(key)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


def decode_json(body: bytes, what: str) -> Any:
    """The JSON value of ``body``; :class:`PayloadError` prefixed with ``what`` when it is not
    one the service accepts (see the module docstring)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{what}: body is not valid JSON (not UTF-8)") from exc
    try:
        data = json.loads(
            text, parse_constant=_refuse_constant, parse_int=_parse_int, parse_float=_parse_float
        )
        _check(data)
    except PayloadError as exc:
        raise PayloadError(f"{what}: body is not acceptable JSON: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError(f"{what}: body is not acceptable JSON: nested too deeply") from exc
    except ValueError as exc:
        raise PayloadError(f"{what}: body is not valid JSON") from exc
    return data


def epoch_time(value: int | float, *, per_second: int, what: str) -> datetime:
    """``value`` epoch units (``per_second`` of them a second: 1 seconds, 1000 milliseconds) as
    aware UTC; :class:`PayloadError` naming ``what`` when it is not a representable time."""
    try:
        return datetime.fromtimestamp(value / per_second, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise PayloadError(f"{what} is out of range") from exc
