"""The budget one template render runs against (providers/render/sandbox.py charges it; template.py sets it).

`RenderLimits` says how much a render may produce and do; a `Budget` counts what it has used: steps of work,
characters and items built by operations that grow values, characters of output. Held in a context variable
(`metered`) so that every hook sees the current render's budget, including the ones Jinja calls without a
context argument. `printed_size` bounds how long a value prints without printing it.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Collection, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import orjson
from jinja2.runtime import Undefined

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


def length_of(value: Any) -> int:
    try:
        return len(value) if isinstance(value, str | list | tuple | dict | set | frozenset) else 0
    except TypeError:
        return 0
