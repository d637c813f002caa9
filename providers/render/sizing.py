"""Sizing rules of the bounded template sandbox: what each growing operation would build, charged before it runs.

Operators (`*`, `%`, `**`), str methods (`replace`, `center`, `join`, ...), `str.format` fields and the allowed
filters each compute the size of their result from their arguments and charge it to the current render's
`Budget` (providers/render/budget.py) before producing it. Used by providers/render/sandbox.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedFormatter

from providers.render.budget import (
    MAX_INT_BITS,
    Budget,
    TemplateLimitExceeded,
    budget,
    length_of,
    printed_size,
)

# --- operators -------------------------------------------------------------------------------------------------

_PRINTF = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d*))?[hlL]?(?P<conv>[%a-zA-Z]?)"
)


def printf_size(fmt: str, args: Any) -> int:
    """An upper bound of the length of `fmt % args`, from each conversion's width, precision and value."""
    positional: Sequence[Any] = args if isinstance(args, tuple) else (args,)
    mapping: Mapping[str, Any] | None = args if isinstance(args, Mapping) else None
    total, index = len(fmt), 0
    for spec in _PRINTF.finditer(fmt):
        if spec["conv"] == "%":
            total += 1
            continue
        if spec["width"] == "*" or spec["prec"] == "*":
            raise TemplateLimitExceeded("a '*' width or precision is not allowed in a template")
        width, prec = int(spec["width"] or 0), int(spec["prec"] or 0)
        if spec["key"] is not None and mapping is not None:
            value = mapping.get(spec["key"])
        else:
            value = positional[index] if index < len(positional) else ""
            index += 1
        if isinstance(value, str):
            size = printed_size(value, quoted=spec["conv"] in ("r", "a"))
        elif isinstance(value, int | float):
            size = max(printed_size(value), 330)  # '%f' % 1e308 has 309 digits before the point
        else:
            size = 2 * printed_size(value, quoted=True)
        total += max(width, size + prec) + 1
    return total


def multiply_size(left: Any, right: Any) -> int | None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            return len(seq) * max(times, 0)
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and left.bit_length() + right.bit_length() > MAX_INT_BITS
    ):
        raise TemplateLimitExceeded(f"template would build an integer of more than {MAX_INT_BITS} bits")
    return None


def check_power(left: Any, right: Any) -> None:
    ints = isinstance(left, int) and isinstance(right, int)
    if ints and right > 0 and abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
        raise TemplateLimitExceeded(f"template would build an integer of more than {MAX_INT_BITS} bits")


# --- str methods -----------------------------------------------------------------------------------------------

_PAD_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_CASE_METHODS = frozenset({"upper", "lower", "title", "capitalize", "casefold", "swapcase"})
_SPLIT_METHODS = frozenset({"split", "rsplit", "splitlines", "partition", "rpartition"})
# translate maps one char to any string; maketrans only serves it; encode yields bytes nobody needs here
_REFUSED_METHODS = frozenset({"translate", "maketrans", "encode"})


def _int_arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: int) -> int:
    value = args[index] if len(args) > index else kwargs.get(name, default)
    return value if isinstance(value, int) else 0


def _case_size(text: str) -> int:
    return len(text) if text.isascii() else 3 * len(text)  # 'ß'.upper() is 'SS'; a few chars grow to 3


def _replace_size(text: str, old: Any, new: Any, count: Any) -> int:
    if not isinstance(old, str) or not isinstance(new, str):
        return len(text)
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def call_str_method(b: Budget, text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    n = len(text)
    if name in _REFUSED_METHODS:
        raise SecurityError(f"str.{name} is not available in templates")
    if name in _PAD_METHODS:
        b.build(max(n, _int_arg(args, kwargs, 0, "width", 0)))
    elif name == "expandtabs":
        b.build(n + text.count("\t") * max(_int_arg(args, kwargs, 0, "tabsize", 8), 0))
    elif name == "replace":
        b.work(n)
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        b.build(_replace_size(text, args[0] if args else None, args[1] if len(args) > 1 else None, count))
    elif name == "join" and args and not kwargs:
        items = list(args[0])  # an iterator is consumed here, so the join below gets the materialised list
        b.step(len(items))  # sized in Python, item by item
        b.build(sum(len(i) for i in items if isinstance(i, str)) + n * max(len(items) - 1, 0))
        return text.join(items)
    elif name in _CASE_METHODS:
        b.build(_case_size(text))
    elif name in _SPLIT_METHODS:
        b.build(n)
    else:
        b.work(n)  # find, count, strip, startswith, is*: nothing longer than the string itself
    return getattr(text, name)(*args, **kwargs)


class BoundedFormatter(SandboxedFormatter):
    """`str.format` that sizes each field (value, width and precision) before formatting it."""

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion in ("r", "a"):
            budget().build(printed_size(value, quoted=True))
        elif conversion == "s":
            budget().build(printed_size(value))
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        numbers = sum(
            int(n) for n in re.findall(r"\d+", format_spec)
        )  # width, precision (and the fill digit)
        size = printed_size(value) if isinstance(value, str) else 2 * printed_size(value)
        budget().build(max(size, 1) + numbers)
        return super().format_field(value, format_spec)


# --- filters and tests -----------------------------------------------------------------------------------------


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _predict_replace(b: Budget, args: tuple[Any, ...], kwargs: dict[str, Any], at: int) -> tuple[Any, ...]:
    value = args[at]
    old, new = _arg(args, kwargs, at + 1, "old", None), _arg(args, kwargs, at + 2, "new", None)
    count = _arg(args, kwargs, at + 3, "count", None)
    if isinstance(value, str):
        b.build(_replace_size(value, old, new, count))
    else:  # the filter prints the value first: every char may match
        size = printed_size(value)
        b.build(size + (size + 1) * max(len(str(new)) - len(str(old)), 0))
    return args


def _predict_join(b: Budget, args: tuple[Any, ...], kwargs: dict[str, Any], at: int) -> tuple[Any, ...]:
    items = list(args[at])  # materialised once: the real filter then joins this list, not a spent iterator
    b.step(len(items))  # sized in Python, item by item
    separator = str(_arg(args, kwargs, at + 1, "d", ""))
    b.build(sum(printed_size(i) for i in items) + len(separator) * max(len(items) - 1, 0))
    return (*args[:at], items, *args[at + 1 :])


def _sizer(
    size: Callable[[Any], int],
) -> Callable[[Budget, tuple[Any, ...], dict[str, Any], int], tuple[Any, ...]]:
    def predict(b: Budget, args: tuple[Any, ...], kwargs: dict[str, Any], at: int) -> tuple[Any, ...]:
        b.build(size(args[at]))
        return args

    return predict


def _predict_sum(b: Budget, args: tuple[Any, ...], kwargs: dict[str, Any], at: int) -> tuple[Any, ...]:
    start = _arg(args, kwargs, at + 2, "start", 0)
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise SecurityError("sum() adds numbers only in templates")
    return args


def _print_case(value: Any) -> int:
    return _case_size(value) if isinstance(value, str) else 3 * printed_size(value)


_PREDICT: dict[str, Callable[[Budget, tuple[Any, ...], dict[str, Any], int], tuple[Any, ...]]] = {
    "replace": _predict_replace,
    "join": _predict_join,
    "upper": _sizer(_print_case),
    "lower": _sizer(_print_case),
    "title": _sizer(_print_case),
    "capitalize": _sizer(_print_case),
    "string": _sizer(printed_size),
    "truncate": _sizer(printed_size),
    "trim": _sizer(printed_size),
    "tojson": _sizer(lambda v: 3 * printed_size(v, quoted=True)),  # <, >, &, ' become 6-char escapes
    "urlencode": _sizer(lambda v: 12 * printed_size(v, quoted=True)),  # a char is up to 4 bytes of %XX
    "sum": _predict_sum,
}


#: filters that walk their value in C (the others run Python code per item and cost a step per item)
_C_SPEED = frozenset(
    {"length", "count", "first", "last", "join", "list", "reverse", "string", "trim", "upper", "lower"}
    | {"replace", "truncate", "default", "d", "capitalize", "int", "float", "abs", "round", "tojson"}
)


def metered_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` (a filter or test) charged for the value it walks, with its output sized first when it grows."""
    pass_arg = getattr(func, "jinja_pass_arg", None)
    at = 1 if pass_arg is not None else 0  # the context/environment comes before the value
    predict = _PREDICT.get(name)

    def metered(*args: Any, **kwargs: Any) -> Any:
        b = budget()
        if len(args) > at:
            walked = sum(length_of(a) for a in args[at:])  # the value, and a sequence an `in` test walks
            if name in _C_SPEED:
                b.work(walked)
            else:  # Python code per item (key functions, tests): a step each, sorting n log n
                b.step(1 + walked * (max(walked, 2).bit_length() if name == "sort" else 1))
            if predict is not None:
                args = predict(b, args, kwargs, at)
        result = func(*args, **kwargs)
        if isinstance(result, list):  # list, sort, reverse, unique of a string: charge the items built
            b.build(len(result))
        return result

    if pass_arg is not None:
        metered.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return metered
