"""Generated functions: the codec writes one straight-line Python function per message type.

Rendering and the parse fast path decide every rule of a message type once (which fields,
which checks, which nested function) and emit it as source, compiled with ``exec``. At call
time there is no loop over descriptors, no option lookup and no per-field closure call — what
an interpreter walking the options paid on every value. The source is kept as ``__source__`` for debugging.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["Functions", "Source"]


class Source:
    """The lines of one generated function and the objects its code refers to by name."""

    def __init__(self, header: str) -> None:
        self.lines: list[str] = [header]
        self._names: dict[str, Any] = {}

    def add(self, line: str, indent: int = 1) -> None:
        self.lines.append("    " * indent + line)

    def name(self, value: Any, hint: str) -> str:
        """A global name in the generated code bound to ``value``."""
        key = f"_{hint}_{len(self._names)}"
        self._names[key] = value
        return key

    def build(self, function: str, label: str) -> Callable[..., Any]:
        """Compile the source and return its function called ``function``."""
        source = "\n".join(self.lines)
        namespace = dict(self._names)
        exec(compile(source, f"<openai_json {label}>", "exec"), namespace)
        built: Callable[..., Any] = namespace[function]
        built.__source__ = source  # type: ignore[attr-defined]
        return built


class Functions:
    """Generated functions by key (a message type, maybe with a mode), built on first use.

    `get` builds and caches; `nested` is what a function being built refers to for a field's
    type — the function itself, or, for a type that contains itself (its own function is
    still being built), a lookup at call time."""

    def __init__(self, build: Callable[[Any], Callable[..., Any]]) -> None:
        self._build = build
        self._built: dict[Hashable, Callable[..., Any]] = {}
        self._building: set[Hashable] = set()

    def get(self, key: Hashable) -> Callable[..., Any]:
        function = self._built.get(key)
        if function is None:
            self._building.add(key)
            try:
                function = self._built[key] = self._build(key)
            finally:
                self._building.discard(key)
        return function

    def nested(self, key: Hashable) -> Callable[..., Any]:
        if key in self._building:
            return lambda *args: self.get(key)(*args)
        return self.get(key)
