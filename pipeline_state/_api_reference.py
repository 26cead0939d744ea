"""The public API page: every name of the public modules, rendered from their ``__all__``.

The page ``docs/reference/api.md`` is the single list of what the library offers: one row
per name of :data:`PUBLIC_MODULES`, with its kind, the module that defines it and the first
sentence of its docstring. It is generated (and drift-checked) with the other reference
pages by :mod:`pipeline_state._docsgen`, and ``tests/core/test_core_public_api.py`` reads it
back and compares it with what imports.
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import re
import typing
from collections.abc import Iterator
from types import ModuleType

__all__ = ["PUBLIC_MODULES", "ApiRow", "api_rows", "defined_in", "kind_of", "render_api_page", "summary_of"]

PUBLIC_MODULES: tuple[str, ...] = (
    "pipeline_state",
    "pipeline_state.ports",
    "pipeline_state.testing",
    "pipeline_state.errors",
    "pipeline_state.documents",
)
"""The modules whose ``__all__`` is the public API, in the order the page shows them."""

_INTROS = {
    "pipeline_state": "What a service author uses: the service and the in-memory runtime, the "
    "profile and catalog a deployment declares, the wire it reads, the in-memory adapters and "
    "the main errors.",
    "pipeline_state.ports": "The adapter interface: the Protocols adapters implement (stores, "
    "transports, clocks, admission, a profile's outbound) and the values they exchange with "
    "the engine.",
    "pipeline_state.testing": "The test kit: builders, the store contract suite every adapter "
    "must pass, generated paths, a stateful test for any profile, span capture and an AsyncAPI "
    "checker. Names other than the builders are imported on first use.",
    "pipeline_state.errors": "The whole error tree (see [Errors](errors.md)); the top level "
    "re-exports the errors a service author handles most.",
    "pipeline_state.documents": "Stored documents for store adapters: a strict cattrs "
    "converter, layouts, schema versions with their upgrade steps (see "
    "[Stored state](../stored-state.md)).",
}

ApiRow = tuple[str, str, str, str]
"""``(name, kind, defining module, summary)``: one row of the page."""

_ROLE = re.compile(r":[a-z]+:`~?\.?([^`]+)`")


def _markdown(text: str) -> str:
    """Docstring prose as Markdown in a table cell: roles and literals as inline code."""
    text = _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return text.replace("``", "`").replace("|", "&#124;")


def _first_sentence(doc: str) -> str:
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split())
    match = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", paragraph)
    return paragraph[: match.start() + 1] if match else paragraph


def _assignments(module: ModuleType) -> Iterator[tuple[str, str | None, ast.stmt]]:
    """``(name, docstring, statement)`` of the module's top-level assignments and imports
    (also those under a top-level ``if``, such as ``if TYPE_CHECKING:``)."""
    body: list[ast.stmt] = []
    for statement in ast.parse(inspect.getsource(module)).body:
        body += statement.body if isinstance(statement, ast.If) else [statement]
    for statement, following in zip(body, [*body[1:], None], strict=True):
        doc = None
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            doc = following.value.value
        if isinstance(statement, ast.Assign):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    yield target.id, doc, statement
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            yield statement.target.id, doc, statement
        elif isinstance(statement, ast.ImportFrom):
            for alias in statement.names:
                yield alias.asname or alias.name, None, statement


def _source_of(module: ModuleType, name: str) -> tuple[ModuleType, str | None]:
    """The module that assigns ``name`` (following ``from ... import``), and its docstring."""
    for found, doc, statement in _assignments(module):
        if found != name:
            continue
        if isinstance(statement, ast.ImportFrom):
            package = module.__name__ if hasattr(module, "__path__") else module.__package__
            origin = importlib.import_module("." * statement.level + (statement.module or ""), package)
            return _source_of(origin, name)
        return module, doc
    raise LookupError(f"{module.__name__} does not assign {name!r}")


def _is_definition(obj: object) -> bool:
    return inspect.isclass(obj) or inspect.isroutine(obj)


def kind_of(obj: object) -> str:
    """What a public name is: class, protocol, enum, exception, function, type alias or constant."""
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return "exception"
        if issubclass(obj, enum.Enum):
            return "enum"
        if getattr(obj, "_is_protocol", False):
            return "protocol"
        return "class"
    if inspect.isroutine(obj):
        return "function"
    if typing.get_origin(obj) is not None:
        return "type alias"
    return "constant"


def defined_in(module: ModuleType, name: str) -> str:
    """The module that defines the object ``module`` exports as ``name``."""
    obj = getattr(module, name)
    if _is_definition(obj):
        return str(obj.__module__)
    return _source_of(module, name)[0].__name__


def summary_of(module: ModuleType, name: str) -> str:
    """The first sentence of the docstring of what ``module`` exports as ``name``, as Markdown."""
    obj = getattr(module, name)
    doc = inspect.getdoc(obj) if _is_definition(obj) else _source_of(module, name)[1]
    if not doc:
        raise ValueError(f"{module.__name__}.{name} has no docstring: the API page needs one")
    return _markdown(_first_sentence(doc))


def api_rows(module_name: str) -> list[ApiRow]:
    """The rows of one public module, in the order of its ``__all__`` sorted by name."""
    module = importlib.import_module(module_name)
    names: list[str] = list(module.__all__)
    return [
        (name, kind_of(getattr(module, name)), defined_in(module, name), summary_of(module, name))
        for name in sorted(names, key=lambda n: (n.lstrip("_").lower(), n))
    ]


def render_api_page() -> list[str]:
    """The lines of the public API page (without the generated banner)."""
    lines = [
        "# Public API",
        "",
        "Every public name of the library, rendered from the `__all__` of the public modules: "
        "import each name from the module whose section lists it. Other modules are the "
        "implementation: they may change in any release. The profiles shipped with the "
        "library are under `pipeline_state.profiles` ([The shipped profile](profile.md)); the "
        "adapter packages list their own names. A test imports every name listed here and "
        "compares it with the row.",
        "",
    ]
    for module_name in PUBLIC_MODULES:
        lines += [f"## `{module_name}`", "", _INTROS[module_name], ""]
        lines += ["| name | kind | defined in | summary |", "|---|---|---|---|"]
        lines += [
            f"| `{n}` | {kind} | `{home}` | {summary} |" for n, kind, home, summary in api_rows(module_name)
        ]
        lines.append("")
    return lines
