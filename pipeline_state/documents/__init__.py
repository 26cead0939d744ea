"""Stored documents: JSON objects written with a schema number, read through cattrs.

* :class:`DocumentCodec`: one kind of stored document (an attrs class, its :class:`Layout`
  and its :class:`Schema`), encoded and decoded;
* :class:`Layout`: stored keys that differ from the model's names, fields not stored, values
  with a form of their own;
* :class:`Schema`: the layout number written, and the registry of upgrade steps that bring
  older documents to it on read.

The SQL store's state documents (``pipeline_state_sql.codec``) and the shipped profile's
results read model are both built on it (see the documentation page *Stored state and its
schema*).
"""

from __future__ import annotations

from ._codec import DocumentCodec
from ._converter import Invalid, Layout, make_converter
from ._schema import Document, Schema, UnknownSchemaError, Upgrade

__all__ = [
    "Document",
    "DocumentCodec",
    "Invalid",
    "Layout",
    "Schema",
    "UnknownSchemaError",
    "Upgrade",
    "make_converter",
]
