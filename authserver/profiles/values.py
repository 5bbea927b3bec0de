"""Shape checks and unit conversions shared by the built-in profiles.

Each function names the dialect field in its error (never the value) and returns the
value in authserver's units: whole seconds for lifetimes.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from authserver.profiles.base import ProfileError
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import beyond_safe_integer
from authserver.vocabulary import check_identity
from authserver.vocabulary import sent_whole_number

#: Longest lifetime any dialect may ask for before the client's ceiling applies (ten
#: years, as for ``expires_in``); beyond it the request is malformed, not clamped.
MAX_SECONDS = 10 * 365 * 86400

# The duration strings of vercel/ms, which jsonwebtoken's ``expiresIn`` (Verdant's
# TokenProvider, Dexie Cloud's token endpoint) accepts: a number and a unit, e.g.
# "10m", "1d", "2 hours", "1.5h". A bare number string means *milliseconds* there, which
# a backend that meant seconds would not expect: it is refused rather than guessed.
# ASCII digits only, as in vercel/ms (JavaScript's \d) and as ``seconds`` reads them:
# Python's \d and float() also take other scripts' digits ("\u0661\u0660m").
_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?|\.\d+) *(?P<unit>[a-z]+)$", re.IGNORECASE | re.ASCII)
_UNITS: dict[str, float] = {}
for _names, _seconds in (
    (("ms", "msec", "msecs", "millisecond", "milliseconds"), 0.001),
    (("s", "sec", "secs", "second", "seconds"), 1.0),
    (("m", "min", "mins", "minute", "minutes"), 60.0),
    (("h", "hr", "hrs", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
    (("w", "week", "weeks"), 7 * 86400.0),
    (("y", "yr", "yrs", "year", "years"), 365.25 * 86400.0),  # vercel/ms: 365.25 days
):
    _UNITS.update(dict.fromkeys(_names, _seconds))


def string(value: Any, field: str, *, max_length: int = 255) -> str:
    if not isinstance(value, str) or not value:
        raise ProfileError(f"{field} must be a non-empty string")
    if len(value) > max_length:
        raise ProfileError(f"{field} is longer than {max_length} characters")
    return value


def user(value: Any, field: str) -> str:
    """A dialect's user field (``userId``, ``identity``), which becomes ``sub``: checked by
    the rules of ``sub`` (no control or bidirectional characters, something visible) here,
    so a refusal names the field the dialect sent, not ``sub``."""
    try:
        return check_identity(string(value, field), "sub", what=field)
    except InvalidValue as exc:
        raise ProfileError(str(exc)) from None


def string_list(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ProfileError(f"{field} must be an array of non-empty strings")
    return list(value)


def json_object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProfileError(f"{field} must be a JSON object")
    return value


def seconds(value: Any, field: str) -> int:
    """A positive whole number of seconds (a JSON number, or digits in a form body)."""
    number = sent_whole_number(value)
    if (number is None and beyond_safe_integer(value)) or (number or 0) > MAX_SECONDS:
        # It is one (digits past 2^53 too): "must be a positive whole number" sent its
        # sender looking elsewhere.
        raise ProfileError(f"{field} must be at most ten years")
    if number is None or number <= 0:
        raise ProfileError(f"{field} must be a positive whole number of seconds")
    return number


def duration(value: Any, field: str) -> int:
    """A vercel/ms duration string ("10m", "1d", "2 hours") or a number of seconds, as
    jsonwebtoken's ``expiresIn`` takes it; whole seconds, rounded down as jsonwebtoken
    rounds the resulting ``exp``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return seconds(value, field)
    if not isinstance(value, str):
        raise ProfileError(f"{field} must be a duration such as 10m or 1d, or seconds")
    match = _DURATION.match(value.strip())
    if match is None or match["unit"].lower() not in _UNITS:
        raise ProfileError(f"{field} must be a number with a unit, such as 90s, 10m, 12h or 1d")
    # float() of a long enough number is infinity, which floor() refuses (it was a 500).
    amount = float(match["n"]) * _UNITS[match["unit"].lower()]
    total = math.floor(amount) if math.isfinite(amount) else MAX_SECONDS + 1
    if not 0 < total <= MAX_SECONDS:
        raise ProfileError(f"{field} must be at least one second and at most ten years")
    return total


def until(value: Any, field: str, now: float) -> int:
    """Seconds from *now* to an RFC 3339 / ISO 8601 date-time with an offset, rounded up."""
    if not isinstance(value, str) or len(value) > 64:
        raise ProfileError(f"{field} must be an ISO 8601 date-time with a UTC offset")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ProfileError(f"{field} must be an ISO 8601 date-time with a UTC offset") from None
    if moment.tzinfo is None:
        raise ProfileError(f"{field} must carry a UTC offset (for example Z or +00:00)")
    # An aware datetime's timestamp() is its difference from the epoch, worked out without
    # converting it: astimezone(UTC) of a moment near year 1 or 9999 leaves the datetime
    # range (an OverflowError, which was a 500 at the token endpoint).
    remaining = math.ceil(moment.timestamp() - now)
    if remaining <= 0:
        raise ProfileError(f"{field} is in the past")
    if remaining > MAX_SECONDS:
        raise ProfileError(f"{field} is more than ten years ahead")
    return remaining
