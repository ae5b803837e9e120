"""Per-object values kept on the object itself (a context's guard, a page's meter, a context's headers).

A ``WeakKeyDictionary`` whose value refers back to its key (a guard holds its context) never frees either: the
module-level dict keeps the value alive, the value keeps the key alive. Every closed context and page was kept
that way, with its Playwright objects (a hibernated session still held its whole context on the Python side).
Kept on the object instead, the pair is one reference cycle that the garbage collector frees with the object.
"""

from __future__ import annotations

import weakref
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class Attached(Generic[V]):
    """A value of type ``V`` per object, stored in the object's ``__dict__`` under a private name."""

    def __init__(self, name: str) -> None:
        self._name = f"_crawlkeeper_{name}"
        # Objects without a __dict__ (none of Playwright's or the fakes'); their values must not refer back.
        self._fallback: weakref.WeakKeyDictionary[Any, V] = weakref.WeakKeyDictionary()

    def get(self, obj: Any) -> V | None:
        try:
            return vars(obj).get(self._name)  # type: ignore[no-any-return]
        except TypeError:
            return self._fallback.get(obj)

    def __setitem__(self, obj: Any, value: V) -> None:
        try:
            vars(obj)[self._name] = value
        except TypeError:
            self._fallback[obj] = value


__all__ = ["Attached"]
