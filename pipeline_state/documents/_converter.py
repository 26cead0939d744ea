"""A cattrs converter for stored JSON documents, strict about what it reads.

:func:`make_converter` builds a :class:`cattrs.Converter` that writes attrs classes as JSON
objects (tuples as lists, frozensets as sorted lists, enums as their values, datetimes as
ISO-8601 text) and reads them
back checking every value: a number where text belongs, a bool where a number belongs, a
datetime without a timezone, an unknown enum value or a string where a list belongs raise
:class:`Invalid` instead of being coerced. A :class:`Layout` says how the model's classes
differ from their stored form: fields stored under another key (the state was renamed, the
stored keys were not), fields not stored, and values with a form of their own.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum, IntEnum, StrEnum
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

import attrs
from cattrs import Converter
from cattrs.fns import identity
from cattrs.gen import make_dict_structure_fn_from_attrs, make_dict_unstructure_fn, override

__all__ = ["Invalid", "Layout", "make_converter"]


class Invalid(ValueError):
    """A stored value of the wrong form. The message is a predicate about the value
    (``should be int, got str``); the codec names the field it belongs to."""


@attrs.frozen
class Layout:
    """How the model's attrs classes are laid out in a stored document.

    ``renames[cls][attribute]`` is the key ``attribute`` of ``cls`` is stored under (when it
    is not the attribute's name); ``omit[cls]`` are attributes not stored at all (read back
    as their defaults); ``optional[cls]`` are attributes a stored document may lack (they
    were added to a layout after rows were written), read as their defaults; every other
    stored attribute must be present, default or not. Each of ``hooks`` registers hooks on a
    converter, for values stored in a form of their own.
    """

    renames: Mapping[type, Mapping[str, str]] = attrs.field(factory=dict)
    omit: Mapping[type, frozenset[str]] = attrs.field(factory=dict)
    optional: Mapping[type, frozenset[str]] = attrs.field(factory=dict)
    hooks: tuple[Callable[[Converter], None], ...] = ()

    def key(self, cls: type, attribute: str) -> str:
        """The stored key of ``attribute`` of ``cls``."""
        return self.renames.get(cls, {}).get(attribute, attribute)


def _kind(value: object) -> str:
    return type(value).__name__


# Exact types, as the JSON reader makes them (a bool is not an int here, nor an int a bool):
# these run for every field of every document read, so each is one comparison.
def _str(value: object, _: object) -> str:
    if type(value) is str:
        return value
    raise Invalid(f"should be str, got {_kind(value)}")


def _int(value: object, _: object) -> int:
    if type(value) is int:
        return value
    raise Invalid(f"should be int, got {_kind(value)}")


def _float(value: object, _: object) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise Invalid(f"should be a number, got {_kind(value)}")


def _bool(value: object, _: object) -> bool:
    if type(value) is bool:
        return value
    raise Invalid(f"should be bool, got {_kind(value)}")


def _maybe_str(value: object, kind: object) -> str | None:
    return value if value is None or type(value) is str else _str(value, kind)


def _maybe_int(value: object, kind: object) -> int | None:
    return value if value is None or type(value) is int else _int(value, kind)


def _maybe_float(value: object, kind: object) -> float | None:
    return value if value is None or type(value) is float else _float(value, kind)


_MAYBE: dict[Any, Callable[[object, object], Any]] = {str: _maybe_str, int: _maybe_int, float: _maybe_float}
"""``X | None`` of a primitive in one call (the general optional hook takes two)."""


def _datetime(value: object, _: object) -> datetime:
    if not isinstance(value, str):
        raise Invalid(f"should be an ISO-8601 time, got {_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f"is not an ISO-8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise Invalid(f"has no timezone: {value!r}")
    return parsed


def _maybe_isoformat(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _is_optional(kind: Any) -> bool:
    args = get_args(kind)
    return get_origin(kind) in (Union, UnionType) and len(args) == 2 and NoneType in args


def _optional(kind: Any, converter: Converter) -> Callable[[object, object], Any]:
    inner_kind = next(arg for arg in get_args(kind) if arg is not NoneType)
    if inner_kind in _MAYBE:
        return _MAYBE[inner_kind]
    inner = converter.get_structure_hook(inner_kind)

    def structure(value: object, _: object) -> Any:
        return None if value is None else inner(value, inner_kind)

    return structure


def _enum(value: object, kind: type[Enum]) -> Enum:
    try:
        return kind(value)
    except ValueError:
        raise Invalid(f"has an unknown value {value!r}") from None


def _unstructure_optional(kind: Any, converter: Converter) -> Callable[[Any], Any]:
    inner = converter.get_unstructure_hook(next(arg for arg in get_args(kind) if arg is not NoneType))
    if inner == identity:
        return identity  # inlined by cattrs' generated functions: no call for str | None

    def unstructure(value: Any) -> Any:
        return None if value is None else inner(value)

    return unstructure


def _is_homogeneous_tuple(kind: Any) -> bool:
    args = get_args(kind)
    return get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis


def _tuple(kind: Any, converter: Converter) -> Callable[[object, object], tuple[Any, ...]]:
    item_kind = get_args(kind)[0]
    if item_kind is str:

        def strings(value: object, _: object) -> tuple[Any, ...]:
            if type(value) is not list:
                raise Invalid(f"should be list, got {_kind(value)}")
            for item in value:  # a loop: twice as fast as all() over a generator
                if type(item) is not str:
                    raise Invalid("should hold strings")
            return tuple(value)

        return strings
    item = converter.get_structure_hook(item_kind)
    if converter.detailed_validation:
        # cattrs' own hook notes the index of a bad item for the error message.
        from cattrs.cols import homogenous_tuple_structure_factory

        item_by_item = homogenous_tuple_structure_factory(kind, converter)

        def noted(value: object, _: object) -> tuple[Any, ...]:
            if type(value) is not list:
                raise Invalid(f"should be list, got {_kind(value)}")
            return item_by_item(value, kind)  # type: ignore[no-any-return]

        return noted

    def items(value: object, _: object) -> tuple[Any, ...]:
        if type(value) is not list:
            raise Invalid(f"should be list, got {_kind(value)}")
        return tuple([item(element, item_kind) for element in value])

    return items


def _is_frozenset(kind: Any) -> bool:
    return get_origin(kind) is frozenset


def _frozenset(kind: Any, converter: Converter) -> Callable[[object, object], frozenset[Any]]:
    item_kind = get_args(kind)[0]
    item = converter.get_structure_hook(item_kind)

    def structure(value: object, _: object) -> frozenset[Any]:
        if type(value) is not list:
            raise Invalid(f"should be list, got {_kind(value)}")
        return frozenset([item(element, item_kind) for element in value])

    return structure


def _unstructure_items(kind: Any, converter: Converter) -> Callable[[Any], list[Any]]:
    """A tuple as a list; a frozenset as a sorted list (the same set, the same bytes)."""
    item = converter.get_unstructure_hook(get_args(kind)[0])
    ordered = _is_frozenset(kind)
    if item == identity:
        return sorted if ordered else list

    def unstructure(value: Any) -> list[Any]:
        items = [item(element) for element in value]
        return sorted(items) if ordered else items

    return unstructure


def _stored_fields(layout: Layout, cls: type) -> list[attrs.Attribute[Any]]:
    """The fields of ``cls`` as cattrs should read them: a stored field with a default is
    required unless the layout says it may be absent. Passed by keyword, so a field left
    out never shifts the others."""
    attrs.resolve_types(cls)
    optional = layout.optional.get(cls, frozenset())
    return [
        field if field.name in optional else field.evolve(default=attrs.NOTHING, kw_only=True)
        for field in attrs.fields(cls)
    ]


def _overrides(layout: Layout, cls: type) -> dict[str, Any]:
    found: dict[str, Any] = {name: override(rename=key) for name, key in layout.renames.get(cls, {}).items()}
    found.update({name: override(omit=True) for name in layout.omit.get(cls, ())})
    return found


def make_converter(layout: Layout, *, detailed: bool = False) -> Converter:
    """A converter for documents laid out as ``layout``.

    ``detailed``: the slower cattrs mode whose errors say which attribute and which item
    failed (the codec uses it to explain a document the fast one could not read).
    """
    converter = Converter(detailed_validation=detailed)
    # Hooks for classes go by the class's MRO: a str or int enum gets the enum hook, which
    # is registered for the enum bases that come before str and int in it.
    for kind, read in ((str, _str), (int, _int), (float, _float), (bool, _bool), (datetime, _datetime)):
        converter.register_structure_hook(kind, read)
    for base in (Enum, StrEnum, IntEnum):
        converter.register_structure_hook(base, _enum)
        converter.register_unstructure_hook(base, operator.attrgetter("value"))
    # C callables, no Python frame per value: these run for every time and status written.
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_structure_hook_factory(_is_optional, _optional)
    converter.register_unstructure_hook_factory(_is_optional, _unstructure_optional)
    converter.register_unstructure_hook(datetime | None, _maybe_isoformat)
    converter.register_structure_hook_factory(_is_homogeneous_tuple, _tuple)
    converter.register_structure_hook_factory(_is_frozenset, _frozenset)
    converter.register_unstructure_hook_factory(
        lambda kind: _is_homogeneous_tuple(kind) or _is_frozenset(kind), _unstructure_items
    )

    def structure_class(cls: type, converter: Converter) -> Callable[[object, object], Any]:
        generated: Callable[..., Any] = make_dict_structure_fn_from_attrs(
            _stored_fields(layout, cls), cls, converter, **_overrides(layout, cls)
        )
        if not detailed:
            return generated

        def checked(value: object, kind: object) -> Any:
            if type(value) is not dict:
                raise Invalid(f"should be an object, got {_kind(value)}")
            return generated(value, kind)

        return checked

    def unstructure_class(cls: type) -> Callable[[Any], dict[str, Any]]:
        return make_dict_unstructure_fn(cls, converter, **_overrides(layout, cls))

    converter.register_structure_hook_factory(attrs.has, structure_class)
    converter.register_unstructure_hook_factory(attrs.has, unstructure_class)
    for register in layout.hooks:
        register(converter)
    return converter
