"""The `utils.*` functions of the rule language: dates, lengths, numbers, ObjectIds
(docs/rules.md).

Each function takes its argument getters and returns the call's getter; the call syntax is
parsed next to the other references (rules/refs.py), which binds it through `FUNCTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from authz.durations import parse_duration
from authz.numeric import parse_canonical
from authz.values import MISSING, Getter, is_constant, literal

_UNITS = ("year", "month", "day", "hour", "minute", "second")
MAX_OFFSET = timedelta(hours=14)  # Kiribati (+14:00) and Baker Island (-12:00) bound real zones


# --- dates -------------------------------------------------------------------------------


def parse_date(value: Any) -> datetime | None:
    """RFC 3339 timestamp or YYYY-MM-DD date -> aware UTC datetime; None if neither.

    A date is an instant: a timestamp's UTC offset is applied (so `...T01:00:00+01:00` is
    midnight UTC), its offset must be one a real place uses (within ±14:00), a timestamp
    without an offset is UTC, and a bare `YYYY-MM-DD` is midnight UTC of that day."""
    if isinstance(value, datetime):
        if not value.tzinfo:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except (ValueError, OverflowError):
            return None
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        if value[10] not in "Tt ":
            return None
        dt = datetime.fromisoformat(value)
        offset = dt.utcoffset()
        if offset is not None and abs(offset) > MAX_OFFSET:
            return None  # no place is this far from UTC: +23:59 only shifts a date by a day
        # Normalised to UTC here, once: 0001-01-01T00:00:00+01:00 cannot be, and is no date.
        return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def format_date(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _truncate(dt: datetime, unit: str) -> datetime:
    dt = dt.astimezone(UTC)
    if unit == "year":
        return dt.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "month":
        return dt.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "hour":
        return dt.replace(minute=0, second=0, microsecond=0)
    if unit == "minute":
        return dt.replace(second=0, microsecond=0)
    return dt.replace(microsecond=0)


# --- the functions: each takes its argument getters and returns the call's getter ---------


def _exists(g: Getter) -> Getter:
    return lambda args: g(args) is not MISSING


def _length(g: Getter) -> Getter:
    def get(args: dict[str, Any]) -> Any:
        v = g(args)
        return len(v) if isinstance(v, list | dict | str) else MISSING

    return get


def _now() -> Getter:
    return lambda args: format_date(datetime.now(UTC))


def _add_duration(date_g: Getter, dur_g: Getter) -> Getter:
    def get(args: dict[str, Any]) -> Any:
        dt, dur = parse_date(date_g(args)), dur_g(args)
        if dt is None or not isinstance(dur, str):
            return MISSING
        try:
            return format_date(dt + _timedelta(dur))
        except (ValueError, OverflowError):
            return MISSING

    return get


def _timedelta(text: str) -> timedelta:
    return timedelta(seconds=parse_duration(text))


def _round_up_date(date_g: Getter, unit_g: Getter) -> Getter:
    def get(args: dict[str, Any]) -> Any:
        dt, unit = parse_date(date_g(args)), unit_g(args)
        if dt is None or unit not in _UNITS:
            return MISSING
        try:
            return format_date(_truncate(dt, unit))
        except (ValueError, OverflowError):
            return MISSING

    return get


def _each(g: Getter, convert: Callable[[Any], Any]) -> Getter:
    """Apply `convert` to a value or to every item of a list; MISSING if any item fails."""

    def get(args: dict[str, Any]) -> Any:
        v = g(args)
        if isinstance(v, list):
            out = [convert(x) for x in v]
            return MISSING if any(x is MISSING for x in out) else out
        return convert(v)

    return get


def _string_to_object_id(g: Getter) -> Getter:
    from bson import ObjectId
    from bson.errors import InvalidId

    def convert(v: Any) -> Any:
        if not isinstance(v, str):
            return MISSING
        try:
            return ObjectId(v)
        except (InvalidId, TypeError):
            return MISSING

    return _each(g, convert)


def _number(g: Getter) -> Getter:
    """A number, or a canonical decimal string as the number it spells ("12" -> 12); anything
    else ("012", "1e3", true, a missing reference) is no value, so the rule errs (a deny)."""

    def convert(v: Any) -> Any:
        if type(v) is int or type(v) is float:
            return v
        n = parse_canonical(v) if type(v) is str else None
        return MISSING if n is None else n

    return _each(g, convert)


def _object_id_to_string(g: Getter) -> Getter:
    from bson import ObjectId

    return _each(g, lambda v: str(v) if isinstance(v, ObjectId) else MISSING)


# name -> (factory, arity, which arguments must be references (paths))
FUNCTIONS: dict[str, tuple[Callable[..., Getter], int, tuple[int, ...]]] = {
    "exists": (_exists, 1, (0,)),
    "length": (_length, 1, ()),
    "now": (_now, 0, ()),
    "addDuration": (_add_duration, 2, ()),
    "roundUpDate": (_round_up_date, 2, ()),
    "stringToObjectId": (_string_to_object_id, 1, ()),
    "objectIdToString": (_object_id_to_string, 1, ()),
    "number": (_number, 1, ()),
}


def check_literals(name: str, args: list[Getter]) -> None:
    """Reject, at load, a literal argument the function can never use; ValueError."""
    if name == "addDuration" and is_constant(args[1]):
        parse_duration(literal(args[1]))
    if name == "roundUpDate" and is_constant(args[1]) and literal(args[1]) not in _UNITS:
        raise ValueError(f"unit must be one of {', '.join(_UNITS)}")
