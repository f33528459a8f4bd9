"""How a client's value is shown in an error message: always computable, always short.

A request can carry a 5000-digit integer (whose ``repr`` raises past 4300 digits), a megabyte
string or a deep nest; every message that echoes a value uses :func:`describe`, so it stays under
~80 characters and never raises.
"""

from __future__ import annotations

from typing import Any

__all__ = ["describe", "reprlib_repr"]

_DESCRIBE_CHARS = 80


def describe(value: Any) -> str:
    """A short, always-computable description of a client's value for error messages: repr cut to
    ~80 characters; huge ints (whose repr raises past 4300 digits) and deep nests by their size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, (str, bytes)):
        text = repr(value[: _DESCRIBE_CHARS + 1])
    elif isinstance(value, (int, float, bool)) or value is None:
        text = repr(value)
    elif isinstance(value, (list, tuple, dict)):
        text = reprlib_repr(value)
    else:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _DESCRIBE_CHARS else text[: _DESCRIBE_CHARS - 3] + "..."


def reprlib_repr(value: Any) -> str:
    """repr of a container, bounded in depth and length (never recursing past 3 levels)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxstring, r.maxother = 3, 12, 12, 8, 30, 30
    r.repr_int = lambda x, level: describe(x)  # type: ignore[method-assign]
    try:
        return r.repr(value)
    except (RecursionError, ValueError):  # pragma: no cover - reprlib is bounded by maxlevel
        return f"<{type(value).__name__}>"
