"""Schema versions of stored documents and the upgrade steps between them.

Every stored document carries its layout number under one key (``schema``). A
:class:`Schema` says which number this release writes and holds the registry of upgrade
steps: ``upgrades[n]`` turns a document of layout ``n`` into one of layout ``n + 1``. On
read, :meth:`Schema.upgrade` applies the steps from the document's number up to the current
one, so the decoder only ever sees the current layout; on write, the codec stamps the
current number. Rows are thereby migrated lazily: a row is rewritten in the new layout the
next time its batch changes, and a row never rewritten still loads.

See the documentation page *Stored state* (``docs/stored-state.md``) for how a release adds
a layout.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = ["Document", "Schema", "UnknownSchemaError", "Upgrade"]

Document = dict[str, Any]
"""A JSON object as the JSON reader gives it."""

Upgrade = Callable[[Document], Document]
"""One step: takes a document of layout ``n`` (a private copy it may change in place) and
returns the same facts in layout ``n + 1``; the schema key is set by :class:`Schema`."""


class UnknownSchemaError(ValueError):
    """A document's schema number is missing, not a number, or one this release cannot read."""


def _check_upgrades(schema: Schema, _attribute: object, upgrades: Mapping[int, Upgrade]) -> None:
    steps = sorted(upgrades)
    if steps and (steps[0] < 1 or steps != list(range(steps[0], schema.version))):
        raise ValueError(
            f"upgrades must be consecutive steps from some layout n >= 1 up to {schema.version - 1}, "
            f"got steps from {steps}"
        )


@attrs.frozen
class Schema:
    """The layout this release writes (``version``) and how older layouts are brought to it.

    ``upgrades`` maps ``n`` to the step from layout ``n`` to ``n + 1``; the oldest readable
    layout is the smallest ``n`` (or ``version`` itself when there are no steps). ``key`` is
    the document field that holds the number.
    """

    version: int = attrs.field(validator=attrs.validators.ge(1))
    upgrades: Mapping[int, Upgrade] = attrs.field(factory=dict, validator=_check_upgrades)
    key: str = "schema"

    @property
    def oldest(self) -> int:
        """The oldest layout this release reads."""
        return min(self.upgrades, default=self.version)

    def stamp(self, body: Document) -> Document:
        """``body`` with the current schema number in front (the key comes first)."""
        return {self.key: self.version, **body}

    def upgrade(self, document: Document) -> Document:
        """``document`` in the current layout. A current document is returned as it is
        (no copy: this is every read of a row written by this release); an older one is
        copied and passed through each step in turn. Raises :class:`UnknownSchemaError` for
        a number that is missing, not an integer, newer than this release or too old."""
        found = document.get(self.key)
        if found == self.version and type(found) is int:
            return document
        if type(found) is not int or not self.oldest <= found < self.version:
            readable = (
                str(self.version) if self.oldest == self.version else f"{self.oldest} to {self.version}"
            )
            raise UnknownSchemaError(f"unknown schema version {found!r} (this version reads {readable})")
        upgraded = copy.deepcopy(document)
        for layout in range(found, self.version):
            upgraded = self.upgrades[layout](upgraded)
            upgraded[self.key] = layout + 1
        return upgraded
