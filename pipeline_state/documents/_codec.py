"""One kind of stored document: an attrs class, its layout and its schema.

:class:`DocumentCodec` writes a value as a JSON-compatible dict stamped with the schema
number, and reads a stored document back: the document is brought to the current layout
(:meth:`~pipeline_state.documents.Schema.upgrade`) and structured by a cattrs function
generated once for the class. A document it cannot read raises
:class:`~pipeline_state.errors.CorruptStateError` naming the batch and the field, found by
structuring the document a second time in cattrs' detailed mode (only on that error path,
so reading a good document costs the fast function alone).
"""

from __future__ import annotations

import functools
from typing import Generic, TypeVar

from cattrs import Converter
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    IterableValidationError,
    IterableValidationNote,
)

from pipeline_state.errors import CorruptStateError

from ._converter import Invalid, Layout, make_converter
from ._schema import Document, Schema, UnknownSchemaError

__all__ = ["DocumentCodec"]

T = TypeVar("T")


class DocumentCodec(Generic[T]):
    """Encode and decode the stored documents of ``cls`` (see the module doc).

    ``what`` names the document in error messages (``the stored document``).
    """

    def __init__(self, cls: type[T], *, layout: Layout, schema: Schema, what: str = "the stored document"):
        self.cls = cls
        self.layout = layout
        self.schema = schema
        self.what = what
        converter = make_converter(layout)
        self._structure = converter.get_structure_hook(cls)
        self._unstructure = converter.get_unstructure_hook(cls)
        self._key, self._version = schema.key, schema.version

    def encode(self, value: T) -> Document:
        """The JSON-compatible document of ``value``, schema number first."""
        return {self._key: self._version, **self._unstructure(value)}  # Schema.stamp, inlined

    def decode(self, document: object, batch_id: str) -> T:
        """The value stored in ``document`` (of any layout the schema reads). Raises
        :class:`~pipeline_state.errors.CorruptStateError` naming ``batch_id``."""
        if type(document) is not dict:
            raise CorruptStateError(
                batch_id, f"{self.what} should be an object, got {type(document).__name__}"
            )
        try:
            current = self.schema.upgrade(document)
        except (UnknownSchemaError, Invalid) as exc:  # an upgrade step names what it cannot read
            raise CorruptStateError(batch_id, str(exc)) from None
        except Exception as exc:  # a step met stored data it did not foresee: still this row's fault
            raise CorruptStateError(
                batch_id, f"{self.what} could not be upgraded ({type(exc).__name__}: {exc})"
            ) from None
        try:
            value: T = self._structure(current, self.cls)
        except Exception:
            raise CorruptStateError(batch_id, self.explain(current)) from None
        return value

    def explain(self, document: Document) -> str:
        """What is wrong with ``document`` (of the current layout), in one sentence."""
        try:
            self._detailed.structure(document, self.cls)
        except Exception as exc:
            return self._reason(exc)
        return f"{self.what} could not be read"  # pragma: no cover - only the fast function failed

    @functools.cached_property
    def _detailed(self) -> Converter:
        return make_converter(self.layout, detailed=True)

    def _reason(self, error: BaseException) -> str:
        """The innermost error of a detailed cattrs error, with the stored keys that lead
        to it: ``field 'phases' should be list, got str (at history[0].phases)``."""
        path: list[str] = []
        while isinstance(error, ClassValidationError | IterableValidationError):
            cls, error = error.cl, error.exceptions[0]
            for note in getattr(error, "__notes__", ()):
                if isinstance(note, AttributeValidationNote):
                    path.append(self.layout.key(cls, note.name))
                elif isinstance(note, IterableValidationNote):
                    path.append(f"[{note.index}]")
        if isinstance(error, KeyError):
            return f"missing field {error.args[0]!r}{_at(path[:-1], 0)}"
        fields = [p for p in path if not p.startswith("[")]
        field = f"field {fields[-1]!r}" if fields else self.what
        if isinstance(error, Invalid):
            return f"{field} {error}{_at(path, 1)}"
        return f"{field} cannot be read: {type(error).__name__}: {error}{_at(path, 1)}"


def _at(path: list[str], plain: int) -> str:
    """`` (at history[0].phases)``, or nothing for a path of at most ``plain`` steps."""
    if len(path) <= plain:
        return ""
    return " (at " + "".join(p if p.startswith("[") or not i else f".{p}" for i, p in enumerate(path)) + ")"
