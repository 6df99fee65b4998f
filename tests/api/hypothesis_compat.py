"""Compatibility shim: hypothesis-jsonschema 0.23.1 (used by schemathesis 3.39) calls the old
`many(...).more()` / `.reject()` API of hypothesis' internal `many`, which hypothesis >= 6.16x replaced
by a `with many(...) as elements: for _ in elements:` protocol. `install()` gives hypothesis-jsonschema
an adapter with the old methods on top of the new protocol. A no-op when the old API still exists.
"""

from __future__ import annotations

from typing import Any


class _OldStyleMany:
    def __init__(self, new_many: type, data: Any, **kwargs: Any) -> None:
        self._many = new_many(data, **kwargs)
        self._many.__enter__()
        self._iterator = iter(self._many)
        self._finished = False

    def more(self) -> bool:
        if self._finished:
            return False
        try:
            next(self._iterator)
            return True
        except StopIteration:
            self._finished = True
            self._many.__exit__(None, None, None)
            return False

    def reject(self, why: str | None = None) -> None:
        self._many.reject(why)


def install() -> None:
    from hypothesis.internal.conjecture import utils as cu
    from hypothesis_jsonschema import _from_schema

    if hasattr(cu.many, "more"):
        return
    new_many = cu.many

    class _Namespace:
        def __getattr__(self, name: str) -> Any:
            return getattr(cu, name)

        @staticmethod
        def many(data: Any, **kwargs: Any) -> _OldStyleMany:
            return _OldStyleMany(new_many, data, **kwargs)

    _from_schema.cu = _Namespace()
