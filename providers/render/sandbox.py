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

import operator
import types
from collections.abc import Callable, Iterable, Iterator
from functools import update_wrapper
from typing import Any, cast

from jinja2 import nodes
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_context
from jinja2.visitor import NodeTransformer

from providers.render.budget import (
    MAX_RANGE,
    RenderLimits,
    TemplateLimitExceeded,
    budget,
    length_of,
    metered,
    printed_size,
)
from providers.render.sizing import (
    BoundedFormatter,
    call_str_method,
    check_power,
    metered_filter,
    multiply_size,
    printf_size,
)

__all__ = [
    "BoundedSandbox",
    "RefusedConstruct",
    "RenderLimits",
    "TemplateLimitExceeded",
    "check_tree",
    "metered",
]


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
        self.filters = {name: metered_filter(name, self.filters[name]) for name in filter_names}
        self.tests = {
            name: metered_filter(name, cast("Callable[..., Any]", test)) for name, test in self.tests.items()
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
            b.work(length_of(left) + length_of(right))
            if not _COMPARE[op](left, right):
                return False
            left = right
        return True

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        b = budget()
        b.step()
        if operator == "*":
            size = multiply_size(left, right)
            if size is not None:
                b.build(size)
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                b.build(len(left) + len(right))
        elif operator == "%":
            if isinstance(left, str):
                b.build(printf_size(left, right))
        elif operator == "**":
            check_power(left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        budget().step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        b = budget()
        b.step()
        if isinstance(argument, slice):
            b.work(length_of(obj))  # a slice copies
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        b = budget()
        b.step()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and isinstance(__obj, types.BuiltinMethodType):
            # What Context.call would drop: the compiler passes a loop's or block's variables along.
            kwargs.pop("_loop_vars", None)
            kwargs.pop("_block_vars", None)
            return call_str_method(b, owner, __obj.__name__, args, kwargs)
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
        formatter = BoundedFormatter(self)

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
