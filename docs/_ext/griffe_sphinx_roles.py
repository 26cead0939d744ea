"""Griffe extension: turn the Sphinx roles of the docstrings into mkdocstrings cross-references.

The library's docstrings use Sphinx roles (``:class:`~pipeline_state.errors.StoreError```,
``:func:`decide```). mkdocstrings renders docstrings as Markdown, where those roles would
show up literally. When a package is loaded, this extension rewrites every docstring:

* a role whose target resolves to an object of a loaded package (absolute, or relative to
  the documented object, its class or its module) becomes an autorefs link
  ``[`Name`][canonical.path]``, so a target that the site does not document fails
  ``mkdocs build --strict``;
* a role whose target cannot be resolved (another library, a local name) becomes inline code;
* a literal-block marker ``text::`` becomes ``text:`` (the indented block stays a code block).

Loaded by ``mkdocs.yml`` (``docs/_ext/griffe_sphinx_roles.py:SphinxRoles``); it is not part
of the site (``exclude_docs``) nor of the library.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

__all__ = ["SphinxRoles"]

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const):`(~?)([^`<>]+)`")
_LITERAL_MARKER = re.compile(r"(\S)::$", re.MULTILINE)


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if isinstance(member, griffe.Alias):
            continue
        yield from _walk(member)


def _lookup(collection: griffe.ModulesCollection, path: str) -> griffe.Object | griffe.Alias | None:
    try:
        found: griffe.Object | griffe.Alias = collection.get_member(path)
    except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    return found


def _canonical(found: griffe.Object | griffe.Alias) -> str:
    if isinstance(found, griffe.Alias):
        try:
            return found.final_target.path
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return found.target_path
    return found.path


def _scopes(obj: griffe.Object) -> list[str]:
    """Paths a relative name may be resolved against, innermost first."""
    scopes: list[str] = []
    current: Any = obj
    while current is not None:
        scopes.append(current.path)
        current = current.parent
    return scopes


def _resolve(collection: griffe.ModulesCollection, obj: griffe.Object, name: str) -> str | None:
    candidates = [name] if "." in name else []
    candidates += [f"{scope}.{name}" for scope in _scopes(obj)]
    for candidate in candidates:
        found = _lookup(collection, candidate)
        if found is not None:
            path = _canonical(found)
            # An import of another library (``import httpx``) is not documented here.
            return path if path.split(".", 1)[0] in collection.members else None
    return None


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles into autorefs links once a whole package is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        collection = loader.modules_collection
        for obj in _walk(pkg):
            docstring = obj.docstring
            if docstring is None:
                continue

            def replace(match: re.Match[str], obj: griffe.Object = obj) -> str:
                short, target = match.group(1), match.group(2).strip()
                label = target.rsplit(".", 1)[-1] if short else target
                path = _resolve(collection, obj, target)
                return f"`{label}`" if path is None else f"[`{label}`][{path}]"

            text = _ROLE.sub(replace, docstring.value)
            docstring.value = _LITERAL_MARKER.sub(r"\1:", text)
