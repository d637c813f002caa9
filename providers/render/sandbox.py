"""The bounded Jinja2 sandbox user payload templates render in (providers/render/template.py).

Jinja's own sandbox stops attribute tricks but not work: `'%50000000s' % 1`, `replace`/`center`/`format`/`join`
amplification or nested `range` loops allocate hundreds of megabytes or run for minutes. Here every render runs
against a `Budget` (one per render, held in a context variable so hooks without a context argument see it):

- operations that can grow a string or a list (`*`, `+`, `%`, `**`, `~`, the str methods and the filters that
  build text) compute the size of what they would produce and charge it BEFORE producing it: no single value
  over `max_string_chars`, no more than `max_built_chars` built in one render;
- every call, attribute or item lookup, comparison, filter, test and loop iteration costs a step (an operation
  that walks a sequence costs one more per `_CELLS_PER_STEP` items), and past `max_render_steps` the render ends;
- output is streamed (`Template.generate`) and stops past `max_output_bytes`.

Template constructs that build output in buffers out of the stream's sight (macros, call and filter blocks,
block `set`, recursive loops, blocks, includes) are refused when the template is compiled (`check_tree`), and
compile-time constant folding is off (`optimized=False`, a `pass_context` finalize), so nothing runs unmetered.
A limit raises `TemplateLimitExceeded`, which the template module reports as the `template_limit` error.
"""

from __future__ import annotations

import contextlib
import operator
import re
import types
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import update_wrapper
from typing import Any, cast

import orjson
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import pass_context
from jinja2.visitor import NodeTransformer

#: an operation walking this many items (chars, list elements) costs one step more
_CELLS_PER_STEP = 64
#: an integer result is refused past this many bits (a 1234-digit number)
MAX_INT_BITS = 4096
#: `range()` in a template yields at most this many numbers
MAX_RANGE = 1000


@dataclass(frozen=True)
class RenderLimits:
    """How much one render may produce and do (settings `HERALD_TEMPLATE_MAX_OUTPUT_BYTES`, `..._RENDER_STEPS`)."""

    max_output_bytes: int = 256 * 1024
    max_render_steps: int = 100_000

    @property
    def max_string_chars(self) -> int:
        """The longest string (or list) an operation may build: nothing longer could be sent anyway."""
        return self.max_output_bytes

    @property
    def max_built_chars(self) -> int:
        """Everything growing operations may build in one render (chars plus list items), freed or not."""
        return 8 * self.max_output_bytes


class TemplateLimitExceeded(Exception):
    """A render broke one of its limits. Not a ValueError: Jinja filters that swallow ValueError (`int`,
    `float`) must not swallow this."""


class Budget:
    """What one render has used so far."""

    __slots__ = ("built", "limits", "output", "steps")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.steps = 0
        self.built = 0
        self.output = 0

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.limits.max_render_steps:
            raise TemplateLimitExceeded(
                f"template used more than {self.limits.max_render_steps} render steps"
            )

    def work(self, cells: int) -> None:
        """Charge an operation that walks `cells` items."""
        self.step(1 + cells // _CELLS_PER_STEP)

    def build(self, cells: int) -> None:
        """Charge a string or list of `cells` chars/items about to be built; refuse it if it is too big."""
        if cells > self.limits.max_string_chars:
            raise TemplateLimitExceeded(
                f"template would build a value of {cells} characters or items "
                f"(at most {self.limits.max_string_chars})"
            )
        self.built += cells
        if self.built > self.limits.max_built_chars:
            raise TemplateLimitExceeded(
                f"template built more than {self.limits.max_built_chars} characters or items in one render"
            )
        self.work(cells)

    def emit(self, chars: int) -> None:
        self.step()
        self.output += chars
        if self.output > self.limits.max_output_bytes:
            raise TemplateLimitExceeded(f"rendered output is over {self.limits.max_output_bytes} bytes")


_BUDGET: ContextVar[Budget | None] = ContextVar("herald_template_budget", default=None)


def budget() -> Budget:
    """The current render's budget (a fresh default one outside a render, so no hook ever runs unbounded)."""
    current = _BUDGET.get()
    return current if current is not None else Budget(RenderLimits())


@contextlib.contextmanager
def metered(limits: RenderLimits) -> Iterator[Budget]:
    """Run one render against a fresh budget."""
    current = Budget(limits)
    token = _BUDGET.set(current)
    try:
        yield current
    finally:
        _BUDGET.reset(token)


def printed_size(value: Any, *, quoted: bool = False) -> int:
    """An upper bound of `len(str(value))`, or with `quoted` of its repr / JSON text, without building it.

    Containers are walked once each (memoised by identity), so a list holding one big string 5000 times is
    measured as the 5000 copies it prints as, in 5000 steps (charged) rather than by printing it."""
    return _size(value, quoted, {})


_CONTAINERS: tuple[type, ...] = (
    list,
    tuple,
    set,
    frozenset,
    dict,
    types.MappingProxyType,
    type({}.items()),
    type({}.keys()),
    type({}.values()),
)


def _size(value: Any, quoted: bool, memo: dict[int, int]) -> int:
    if isinstance(value, str):
        if not quoted:
            return len(value)
        if value.isprintable():
            return 2 * len(value) + 2  # repr/JSON double a quote or backslash at most
        # Line breaks and control chars: measured exactly (in C) rather than guessed at 10x, so a long
        # multi-line release note prints as what it is.
        try:
            return max(len(repr(value)), len(orjson.dumps(value)))
        except orjson.JSONEncodeError:  # a lone surrogate
            return 10 * len(value) + 2
    if isinstance(value, Undefined):
        return 12 if quoted else 0
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2  # decimal digits are about bits / 3.32
    if isinstance(value, float):
        return 32
    if isinstance(value, bytes):
        return 4 * len(value) + 3
    if isinstance(value, _CONTAINERS):
        key = id(value)
        if key in memo:
            return memo[key]
        memo[key] = 16  # a cycle (only input data could hold one) prints as "[...]"
        if isinstance(value, dict | types.MappingProxyType):
            budget().step(len(value))
            total = 2 + sum(_size(k, True, memo) + _size(v, True, memo) + 4 for k, v in value.items())
        else:
            items = cast("Collection[Any]", value)
            budget().step(len(items))  # Python code per item, charged before the walk
            total = 16 + sum(_size(item, True, memo) + 2 for item in items)
        memo[key] = total
        return total
    return 256  # ranges, generators, loop objects: a short repr


def _length(value: Any) -> int:
    try:
        return len(value) if isinstance(value, str | list | tuple | dict | set | frozenset) else 0
    except TypeError:
        return 0


# --- operators -------------------------------------------------------------------------------------------------

_PRINTF = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d*))?[hlL]?(?P<conv>[%a-zA-Z]?)"
)


def _printf_size(fmt: str, args: Any) -> int:
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


def _multiply_size(left: Any, right: Any) -> int | None:
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


def _check_power(left: Any, right: Any) -> None:
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


def _call_str_method(b: Budget, text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
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


class _BoundedFormatter(SandboxedFormatter):
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


def _metered(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` (a filter or test) charged for the value it walks, with its output sized first when it grows."""
    pass_arg = getattr(func, "jinja_pass_arg", None)
    at = 1 if pass_arg is not None else 0  # the context/environment comes before the value
    predict = _PREDICT.get(name)

    def metered(*args: Any, **kwargs: Any) -> Any:
        b = budget()
        if len(args) > at:
            walked = sum(_length(a) for a in args[at:])  # the value, and a sequence an `in` test walks
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


# --- the tree: loops, concatenation and comparisons go through the budget ------------------------------------

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}
_REFUSED_NODES: dict[type[nodes.Node], str] = {
    nodes.Macro: "macros",
    nodes.CallBlock: "call blocks",
    nodes.FilterBlock: "filter blocks",
    nodes.AssignBlock: "block set",
    nodes.Block: "blocks",
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
}


class RefusedConstruct(Exception):
    """A template construct the bounded sandbox does not offer (it would build output out of the stream)."""


def _environment_call(name: str, args: list[Any], lineno: int) -> nodes.Call:
    call = nodes.Call(nodes.EnvironmentAttribute(name), args, [], None, None)
    call.set_lineno(lineno)
    return call


class _Metering(NodeTransformer):
    """Rewrites a parsed template: loop iterables, `~` and comparisons become calls the budget sees."""

    def generic_visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        for kind, what in _REFUSED_NODES.items():
            if isinstance(node, kind):
                raise RefusedConstruct(f"{what} are not available in templates")
        return super().generic_visit(node, *args, **kwargs)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        if node.recursive:
            raise RefusedConstruct("recursive loops are not available in templates")
        node = self.generic_visit(node)
        node.iter = _environment_call("herald_loop", [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        return _environment_call("herald_concat", list(node.nodes), node.lineno)

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        node = self.generic_visit(node)
        ops = nodes.Const(tuple(op.op for op in node.ops))
        return _environment_call(
            "herald_compare", [ops, node.expr, *(op.expr for op in node.ops)], node.lineno
        )


def check_tree(tree: nodes.Template, environment: BoundedSandbox) -> nodes.Template:
    """The parsed template rewritten for metering; raises RefusedConstruct for what cannot be metered."""
    rewritten: nodes.Template = _Metering().visit(tree)
    rewritten.set_environment(environment)
    return rewritten


def _counting_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateLimitExceeded(f"range() of more than {MAX_RANGE} numbers")
    return numbers


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox (no list.append or dict.update to carry state across iterations) with every
    operation charged to the current render's `Budget`."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, *, finalize: Callable[[Any], Any], filter_names: Iterable[str]) -> None:
        @pass_context
        def metered_finalize(context: Context, value: Any) -> Any:
            # pass_context also keeps Jinja from evaluating constant output at compile time, unmetered
            if isinstance(value, list | tuple | dict):
                budget().build(printed_size(value, quoted=True))
            return finalize(value)

        super().__init__(
            autoescape=False,
            finalize=metered_finalize,
            undefined=Undefined,
            keep_trailing_newline=True,
            optimized=False,  # no constant folding at compile (save) time, where no budget runs
        )
        self.filters = {name: _metered(name, self.filters[name]) for name in filter_names}
        self.tests = {
            name: _metered(name, cast("Callable[..., Any]", test)) for name, test in self.tests.items()
        }
        self.globals = {"range": _counting_range}

    # Hooks the compiled template calls (EnvironmentAttribute nodes written by _Metering).
    @staticmethod
    def herald_loop(iterable: Iterable[Any]) -> Iterator[Any]:
        b = budget()
        for item in iterable:
            b.step()
            yield item

    @staticmethod
    def herald_concat(*parts: Any) -> str:
        budget().build(sum(printed_size(p) for p in parts))
        return "".join(str(p) for p in parts)

    @staticmethod
    def herald_compare(ops: tuple[str, ...], left: Any, *operands: Any) -> bool:
        b = budget()
        for op, right in zip(ops, operands, strict=True):
            b.work(_length(left) + _length(right))
            if not _COMPARE[op](left, right):
                return False
            left = right
        return True

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        b = budget()
        b.step()
        if operator == "*":
            size = _multiply_size(left, right)
            if size is not None:
                b.build(size)
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                b.build(len(left) + len(right))
        elif operator == "%":
            if isinstance(left, str):
                b.build(_printf_size(left, right))
        elif operator == "**":
            _check_power(left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        budget().step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        b = budget()
        b.step()
        if isinstance(argument, slice):
            b.work(_length(obj))  # a slice copies
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        b = budget()
        b.step()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and isinstance(__obj, types.BuiltinMethodType):
            # What Context.call would drop: the compiler passes a loop's or block's variables along.
            kwargs.pop("_loop_vars", None)
            kwargs.pop("_block_vars", None)
            return _call_str_method(b, owner, __obj.__name__, args, kwargs)
        if isinstance(owner, list | tuple | dict | set | frozenset):
            b.work(len(owner))  # count, index, copy, items, ...: a walk of the container
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format`/`format_map` through the sizing formatter (Jinja wraps these on attribute access)."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        is_format_map = value.__name__ == "format_map"
        formatter = _BoundedFormatter(self)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            b = budget()
            b.work(len(text))
            result = formatter.vformat(text, args, kwargs)  # each field was sized before it was formatted
            if len(result) > b.limits.max_string_chars:
                raise TemplateLimitExceeded(
                    f"template would build a value of {len(result)} characters "
                    f"(at most {b.limits.max_string_chars})"
                )
            return result

        return update_wrapper(wrapper, value)
