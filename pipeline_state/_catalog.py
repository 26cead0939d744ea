"""Pipeline catalog: which steps a pipeline runs, in which order, and what to prune.

A *catalog* maps pipeline names to :class:`Pipeline` definitions. A pipeline is a DAG of
:class:`Step` s (a step is a *phase*: ``ingest``, ``transcode``, ...) whose edges are the
``depends_on`` lists. Everything here is pure data: no I/O except the explicit loaders, no
state machine, no clock.

Definitions are validated when they are built (:class:`~pipeline_state.errors.CatalogError`):
names the wire cannot carry (more than 200 characters, control characters, lone surrogates:
a phase or pipeline name travels in every envelope as an id), duplicate steps, unknown
dependencies, self-dependencies, cycles, bad deadlines (not positive, not finite, or longer
than :data:`MAX_DEADLINE_SECONDS`), unknown keys, duplicate keys in a YAML file, and one phase
declared with different dependencies in two pipelines.

Steps are kept in *plan order*: a topological order (:class:`graphlib.TopologicalSorter`) where,
among the steps whose dependencies are satisfied, the one declared first goes first. The
order depends only on the declaration, never on set or hash order, so resolving the same
request always gives the same plan.

The dict format (also the shape of TOML and YAML catalog files)::

    {"pipelines": {
        "reindex": {"steps": [
            {"name": "ingest"},
            {"name": "index", "depends_on": ["ingest"], "deadline_seconds": 600},
        ]},
    }}

Other top-level keys of a catalog file are ignored; unknown keys inside a pipeline or a
step are rejected. :meth:`Catalog.to_dict` gives a catalog back in this format (steps in
plan order, ``depends_on`` and ``deadline_seconds`` only when set), so
``Catalog.from_dict(catalog.to_dict()) == catalog``; the dict holds only strings, numbers
and lists, ready for JSON, TOML or YAML.

The shipped profiles' catalogs live with them under :mod:`pipeline_state.profiles`; their
data also ships as ``pipeline_state/profiles/<name>.toml`` (see
:func:`load_packaged_profile_catalog`).
"""

from __future__ import annotations

import graphlib
import heapq
import math
import os
import re
import tomllib
from collections.abc import Collection, Hashable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import yaml

from pipeline_state._model import RECORDED_PIPELINE_PREFIX
from pipeline_state._wire import MAX_ID_LENGTH, is_id_text
from pipeline_state.errors import CatalogError, UnknownPipelineError

__all__ = [
    "MAX_DEADLINE_SECONDS",
    "MAX_STEP_NAME_LENGTH",
    "Catalog",
    "Pipeline",
    "Plan",
    "Step",
    "load_packaged_profile_catalog",
]

_STEP_KEYS = frozenset({"name", "depends_on", "deadline_seconds"})
_PIPELINE_KEYS = frozenset({"steps"})
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

MAX_DEADLINE_SECONDS = 10 * 365 * 86_400
"""The longest time span the engine accepts (ten years): a phase deadline, a waiting window,
a rate limit's window, an outbox lease, the age of a stalled run. A span becomes a time of
day (now plus it), and a longer one would leave the range of ``datetime`` (a traceback on
every request that uses it) long before it meant anything."""


MAX_STEP_NAME_LENGTH = 176
"""The longest step (phase) name, in characters. A step's name is written, prefixed, where
the stores keep at most :data:`~pipeline_state._wire.MAX_ID_LENGTH` (200) characters: the
inbox result of an outcome that waits for its phase's dispatch
(``deferred:phase_dispatch:<name>``, 24 characters more) and the pipeline name of a run an
operator records (``manual:<name>``)."""


def check_deadline(value: object) -> str | None:
    """Why ``value`` is not a usable deadline in seconds (``None`` when it is one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a positive number"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a positive finite number"
    if value <= 0:
        return "must be a positive finite number"
    if value > MAX_DEADLINE_SECONDS:  # an int of any size compares without becoming a float
        return f"must be at most {MAX_DEADLINE_SECONDS} seconds (ten years)"
    return None


def _check_name(value: object, what: str, *, pipeline: str | None = None) -> str:
    """Return ``value`` if it is a usable name, else raise :class:`CatalogError`."""
    if not isinstance(value, str):
        raise CatalogError(
            f"{what} name must be a string, got {type(value).__name__} {value!r}", pipeline=pipeline
        )
    if not value.strip():
        raise CatalogError(f"{what} name must not be empty", pipeline=pipeline)
    if not is_id_text(value):
        raise CatalogError(
            f"{what} name must be 1 to {MAX_ID_LENGTH} characters without control characters "
            f"(it travels in every envelope as an id), got {value!r:.80}",
            pipeline=pipeline,
        )
    if value.startswith(RECORDED_PIPELINE_PREFIX):
        # A step's name too: retrying a phase runs a pipeline named after it.
        raise CatalogError(
            f"{what} name {value!r} begins with {RECORDED_PIPELINE_PREFIX!r}, which names the "
            "runs an operator records",
            pipeline=pipeline,
        )
    return value


# --------------------------------------------------------------------------- definitions


@attrs.frozen
class Step:
    """One step (phase) of a pipeline.

    ``depends_on`` names steps of the same pipeline that must complete first;
    ``deadline_seconds`` is the optional time budget of an active phase (positive, at most
    :data:`MAX_DEADLINE_SECONDS`).
    """

    name: str
    depends_on: tuple[str, ...] = ()
    deadline_seconds: float | None = None

    def __attrs_post_init__(self) -> None:
        _check_name(self.name, "step")
        if len(self.name) > MAX_STEP_NAME_LENGTH:
            raise CatalogError(
                f"step name must be at most {MAX_STEP_NAME_LENGTH} characters (the stores keep it "
                f"prefixed in {MAX_ID_LENGTH}-character fields), got {len(self.name)}: {self.name!r:.80}",
                step=self.name,
            )
        if not isinstance(self.depends_on, tuple):
            raise CatalogError(
                f"step {self.name!r}: depends_on must be a tuple of step names, "
                f"got {type(self.depends_on).__name__}",
                step=self.name,
            )
        seen: set[str] = set()
        for dep in self.depends_on:
            if not isinstance(dep, str) or not dep.strip():
                raise CatalogError(
                    f"step {self.name!r}: dependency names must be non-empty strings, got {dep!r}",
                    step=self.name,
                )
            if dep in seen:
                raise CatalogError(
                    f"step {self.name!r} lists dependency {dep!r} more than once", step=self.name
                )
            seen.add(dep)
        deadline = self.deadline_seconds
        if deadline is not None:
            problem = check_deadline(deadline)
            if problem is not None:
                raise CatalogError(
                    f"step {self.name!r}: deadline_seconds {problem}, got {deadline!r}", step=self.name
                )
            object.__setattr__(self, "deadline_seconds", float(deadline))

    def to_dict(self) -> dict[str, Any]:
        """The step in the dict format: ``name``, then ``depends_on`` and ``deadline_seconds``
        when set."""
        data: dict[str, Any] = {"name": self.name}
        if self.depends_on:
            data["depends_on"] = list(self.depends_on)
        if self.deadline_seconds is not None:
            data["deadline_seconds"] = self.deadline_seconds
        return data


def _plan_order(pipeline: str, steps: tuple[Step, ...]) -> tuple[Step, ...]:
    """Validate the step graph of one pipeline and return its steps in plan order."""
    index: dict[str, int] = {}
    for position, step in enumerate(steps):
        if not isinstance(step, Step):
            raise CatalogError(f"steps must be Step instances, got {type(step).__name__}", pipeline=pipeline)
        if step.name in index:
            raise CatalogError(f"duplicate step {step.name!r}", pipeline=pipeline, step=step.name)
        index[step.name] = position
    for step in steps:
        for dep in step.depends_on:
            if dep == step.name:
                raise CatalogError(f"step {step.name!r} depends on itself", pipeline=pipeline, step=step.name)
            if dep not in index:
                raise CatalogError(
                    f"step {step.name!r} depends on unknown step {dep!r} "
                    f"(not a step of pipeline {pipeline!r})",
                    pipeline=pipeline,
                    step=step.name,
                )

    # graphlib sorts and finds cycles; the heap holds declaration positions, so among the
    # ready steps the one declared first is always taken first.
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for step in steps:
        sorter.add(step.name, *step.depends_on)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = _cycle_path(exc.args[1], index)
        path = " -> ".join([*cycle, cycle[0]])
        raise CatalogError(
            f"dependency cycle: {path} (each step depends on the next)", pipeline=pipeline, step=cycle[0]
        ) from None
    ready: list[int] = []
    ordered: list[Step] = []
    while sorter.is_active():
        for name in sorter.get_ready():
            heapq.heappush(ready, index[name])
        position = heapq.heappop(ready)
        ordered.append(steps[position])
        sorter.done(steps[position].name)
    return tuple(ordered)


def _cycle_path(found: list[str], index: Mapping[str, int]) -> list[str]:
    """The steps of the cycle :class:`graphlib.CycleError` reports (each a dependency of the
    next, first and last the same) as a dependency path (each step depends on the next),
    rotated to start at its first declared member, so the message is deterministic."""
    cycle = list(reversed(found[1:]))
    start = min(range(len(cycle)), key=lambda i: index[cycle[i]])
    return cycle[start:] + cycle[:start]


@attrs.frozen
class Pipeline:
    """A named DAG of steps, stored in plan order (see the module docstring).

    Building a ``Pipeline`` validates it and reorders ``steps`` into plan order; the
    declaration order only breaks ties between steps that are ready at the same time.
    """

    name: str
    steps: tuple[Step, ...]
    _position: Mapping[str, int] = attrs.field(init=False, repr=False, eq=False, hash=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        _check_name(self.name, "pipeline")
        if not isinstance(self.steps, tuple):
            raise CatalogError(
                f"steps must be a tuple of Step, got {type(self.steps).__name__}", pipeline=self.name
            )
        if not self.steps:
            raise CatalogError("pipeline has no steps", pipeline=self.name)
        ordered = _plan_order(self.name, self.steps)
        object.__setattr__(self, "steps", ordered)
        object.__setattr__(
            self, "_position", MappingProxyType({step.name: i for i, step in enumerate(ordered)})
        )

    def to_dict(self) -> dict[str, Any]:
        """The pipeline in the dict format: ``{"steps": [...]}`` in plan order (building it
        again gives the same plan order: a topological order is its own plan order)."""
        return {"steps": [step.to_dict() for step in self.steps]}

    @property
    def step_names(self) -> tuple[str, ...]:
        """Step names in plan order."""
        return tuple(step.name for step in self.steps)

    @property
    def final_step(self) -> str:
        """The last step in plan order (its failure makes a run ``failed_critically``)."""
        return self.steps[-1].name

    @property
    def roots(self) -> tuple[str, ...]:
        """Steps without dependencies, in plan order."""
        return tuple(step.name for step in self.steps if not step.depends_on)

    def __contains__(self, name: object) -> bool:
        return name in self._position

    def step(self, name: str) -> Step:
        """The step called ``name``; :class:`UnknownPipelineError` (kind ``phase``) if absent."""
        try:
            return self.steps[self._position[name]]
        except KeyError:
            raise UnknownPipelineError(name, kind="phase") from None

    def dependencies(self, name: str) -> tuple[str, ...]:
        """Direct dependencies of ``name``, in plan order."""
        return tuple(sorted(self.step(name).depends_on, key=self._position.__getitem__))

    def dependents(self, name: str) -> tuple[str, ...]:
        """Every step that depends on ``name`` directly or transitively, in plan order."""
        self.step(name)
        affected = {name}
        found: list[str] = []
        # Plan order puts every dependency before its dependents, so one pass suffices.
        for step in self.steps[self._position[name] + 1 :]:
            if any(dep in affected for dep in step.depends_on):
                affected.add(step.name)
                found.append(step.name)
        return tuple(found)

    def plan(self, completed: Collection[str]) -> Plan:
        """Split the steps into those to run and those pruned because already ``completed``.

        ``completed`` holds the phases an earlier run of the batch completed successfully
        or partially (the caller computes it); names that are not steps of this pipeline
        are ignored. A step that is not completed is run even if its dependency is pruned.
        """
        to_run = tuple(step for step in self.steps if step.name not in completed)
        pruned = tuple(step.name for step in self.steps if step.name in completed)
        return Plan(pipeline=self, to_run=to_run, pruned=pruned)


@attrs.frozen
class Plan:
    """The resolution of one request: steps to run and steps pruned, both in plan order."""

    pipeline: Pipeline
    to_run: tuple[Step, ...]
    pruned: tuple[str, ...]

    @property
    def to_run_names(self) -> tuple[str, ...]:
        """Names of the steps to run, in plan order."""
        return tuple(step.name for step in self.to_run)


# --------------------------------------------------------------------------- catalog


def _freeze_pipelines(value: Mapping[str, Pipeline] | Iterable[Pipeline]) -> Mapping[str, Pipeline]:
    """Converter for :attr:`Catalog.pipelines`: a read-only mapping in declaration order."""
    frozen: dict[str, Pipeline] = {}
    if isinstance(value, Mapping):
        for key, pipeline in value.items():
            if not isinstance(pipeline, Pipeline):
                raise CatalogError(f"expected a Pipeline, got {type(pipeline).__name__}", pipeline=str(key))
            if key != pipeline.name:
                raise CatalogError(
                    f"catalog key {key!r} does not match the pipeline's name {pipeline.name!r}",
                    pipeline=str(key),
                )
            frozen[key] = pipeline
    else:
        for pipeline in value:
            if not isinstance(pipeline, Pipeline):
                raise CatalogError(f"expected a Pipeline, got {type(pipeline).__name__}")
            if pipeline.name in frozen:
                raise CatalogError("duplicate pipeline", pipeline=pipeline.name)
            frozen[pipeline.name] = pipeline
    return MappingProxyType(frozen)


@attrs.frozen(eq=False)
class Catalog:
    """An immutable set of pipeline definitions, in declaration order.

    Build one with :meth:`from_dict`, :meth:`from_toml`, :meth:`from_yaml` or
    :meth:`from_file`, or directly from :class:`Pipeline` objects
    (``Catalog([pipeline, ...])`` or ``Catalog({"name": pipeline})``).

    A phase that appears in several pipelines must have the same dependencies (compared
    as a set) in all of them.
    """

    pipelines: Mapping[str, Pipeline] = attrs.field(converter=_freeze_pipelines)
    _definitions: Mapping[str, Step] = attrs.field(init=False, repr=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        definitions: dict[str, Step] = {}
        declared_in: dict[str, str] = {}
        for pipeline in self.pipelines.values():
            for step in pipeline.steps:
                first = definitions.get(step.name)
                if first is None:
                    definitions[step.name] = step
                    declared_in[step.name] = pipeline.name
                elif set(first.depends_on) != set(step.depends_on):
                    raise CatalogError(
                        f"phase {step.name!r} depends on {list(step.depends_on)} here but on "
                        f"{list(first.depends_on)} in pipeline {declared_in[step.name]!r}; "
                        "a phase must have the same dependencies in every pipeline",
                        pipeline=pipeline.name,
                        step=step.name,
                    )
        object.__setattr__(self, "_definitions", MappingProxyType(definitions))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Catalog):
            return NotImplemented
        return list(self.pipelines.items()) == list(other.pipelines.items())

    def __hash__(self) -> int:
        return hash(tuple(self.pipelines.items()))

    def __contains__(self, name: object) -> bool:
        return name in self.pipelines

    @property
    def names(self) -> tuple[str, ...]:
        """Pipeline names in declaration order."""
        return tuple(self.pipelines)

    @property
    def phases(self) -> tuple[str, ...]:
        """Every step name across all pipelines, in first-seen order (pipelines, then plan order)."""
        return tuple(self._definitions)

    def get(self, name: str) -> Pipeline:
        """The pipeline called ``name``; :class:`UnknownPipelineError` if it is not defined."""
        try:
            return self.pipelines[name]
        except KeyError:
            raise UnknownPipelineError(name) from None

    def step_definition(self, phase: str) -> Step:
        """The step ``phase`` as first declared in any pipeline.

        Dependencies are the same in every pipeline; ``deadline_seconds`` may differ per
        pipeline (use ``catalog.get(pipeline).step(phase)`` for a pipeline's own value).
        Raises :class:`UnknownPipelineError` (kind ``phase``) for an unknown phase.
        """
        try:
            return self._definitions[phase]
        except KeyError:
            raise UnknownPipelineError(phase, kind="phase") from None

    def plan(self, name: str, completed: Collection[str]) -> Plan:
        """Resolve pipeline ``name`` against the phases an earlier run already ``completed``.

        See :meth:`Pipeline.plan`; raises :class:`UnknownPipelineError` for an unknown pipeline.
        """
        return self.get(name).plan(completed)

    def to_dict(self) -> dict[str, Any]:
        """The catalog in the dict format (see the module), pipelines in declaration order:
        ``Catalog.from_dict(catalog.to_dict()) == catalog``, deadlines included."""
        return {"pipelines": {name: pipeline.to_dict() for name, pipeline in self.pipelines.items()}}

    # ----------------------------------------------------------------------- loaders

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Catalog:
        """Build and validate a catalog from the dict format (see the module docstring)."""
        if not isinstance(data, Mapping):
            raise CatalogError(f"catalog must be a mapping, got {type(data).__name__}")
        if "pipelines" not in data:
            raise CatalogError("catalog has no 'pipelines' table")
        raw_pipelines = data["pipelines"]
        if not isinstance(raw_pipelines, Mapping):
            raise CatalogError(f"'pipelines' must be a mapping, got {type(raw_pipelines).__name__}")
        if not raw_pipelines:
            raise CatalogError("catalog defines no pipelines")
        return cls([_parse_pipeline(name, raw) for name, raw in raw_pipelines.items()])

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Catalog:
        """Load a catalog from a TOML file."""
        raw = _read_bytes(path)
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise CatalogError(f"cannot parse TOML catalog {os.fspath(path)!r}: {exc}") from exc
        return _from_loaded(data, path)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Catalog:
        """Load a catalog from a YAML file (YAML's safe subset; a key given twice in one
        mapping is refused, as TOML refuses it, rather than the last one silently kept)."""
        raw = _read_bytes(path)
        try:
            data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise CatalogError(
                f"cannot parse YAML catalog {os.fspath(path)!r}: {' '.join(str(exc).split())}"
            ) from exc
        return _from_loaded(data, path)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Catalog:
        """Load a catalog from ``.toml``, ``.yaml`` or ``.yml`` (chosen by the suffix)."""
        suffix = Path(path).suffix.lower()
        if suffix == ".toml":
            return cls.from_toml(path)
        if suffix in {".yaml", ".yml"}:
            return cls.from_yaml(path)
        raise CatalogError(
            f"unsupported catalog file {os.fspath(path)!r}: expected a .toml, .yaml or .yml file"
        )


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping naming one key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the safe loader's own error names it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_pipeline(name: object, raw: object) -> Pipeline:
    pipeline = _check_name(name, "pipeline")
    if not isinstance(raw, Mapping):
        raise CatalogError(
            f"pipeline definition must be a mapping with 'steps', got {type(raw).__name__}",
            pipeline=pipeline,
        )
    unknown = sorted(str(key) for key in raw if key not in _PIPELINE_KEYS)
    if unknown:
        raise CatalogError(f"unknown key {unknown[0]!r} in pipeline definition", pipeline=pipeline)
    raw_steps = raw.get("steps")
    if raw_steps is None or (isinstance(raw_steps, list | tuple) and not raw_steps):
        raise CatalogError("pipeline has no steps", pipeline=pipeline)
    if not isinstance(raw_steps, list | tuple):
        raise CatalogError(f"'steps' must be a list, got {type(raw_steps).__name__}", pipeline=pipeline)
    return Pipeline(name=pipeline, steps=tuple(_parse_step(pipeline, raw_step) for raw_step in raw_steps))


def _parse_step(pipeline: str, raw: object) -> Step:
    if not isinstance(raw, Mapping):
        raise CatalogError(
            f"each step must be a mapping, got {type(raw).__name__} {raw!r}", pipeline=pipeline
        )
    if "name" not in raw:
        raise CatalogError(f"step without a name: {dict(raw)!r}", pipeline=pipeline)
    name = _check_name(raw["name"], "step", pipeline=pipeline)
    unknown = sorted(str(key) for key in raw if key not in _STEP_KEYS)
    if unknown:
        raise CatalogError(
            f"unknown key {unknown[0]!r} in step {name!r} (allowed: {', '.join(sorted(_STEP_KEYS))})",
            pipeline=pipeline,
            step=name,
        )
    depends_on = raw.get("depends_on", [])
    if depends_on is None:
        depends_on = []
    if not isinstance(depends_on, list | tuple):
        raise CatalogError(
            f"step {name!r}: depends_on must be a list of step names, got {type(depends_on).__name__}",
            pipeline=pipeline,
            step=name,
        )
    try:
        return Step(name=name, depends_on=tuple(depends_on), deadline_seconds=raw.get("deadline_seconds"))
    except CatalogError as exc:
        raise CatalogError(exc.problem, pipeline=pipeline, step=name) from None


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read catalog file {os.fspath(path)!r}: {exc}") from exc


def _from_loaded(data: object, path: str | os.PathLike[str]) -> Catalog:
    """Validate parsed file content, naming the file in any error."""
    if not isinstance(data, Mapping):
        raise CatalogError(
            f"catalog file {os.fspath(path)!r} must contain a mapping, got {type(data).__name__}"
        )
    try:
        return Catalog.from_dict(data)
    except CatalogError as exc:
        raise CatalogError(f"{os.fspath(path)}: {exc.problem}", pipeline=exc.pipeline, step=exc.step) from exc


def load_packaged_profile_catalog(name: str) -> Catalog:
    """Load the catalog of a profile shipped in ``pipeline_state/profiles/<name>.toml``."""
    if not isinstance(name, str) or not _PROFILE_NAME.fullmatch(name):
        raise CatalogError(f"invalid profile name {name!r}")
    resource = resources.files("pipeline_state.profiles").joinpath(f"{name}.toml")
    if not resource.is_file():
        raise CatalogError(f"no packaged profile {name!r}")
    source = f"<pipeline_state/profiles/{name}.toml>"
    try:
        data = tomllib.loads(resource.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"cannot parse TOML catalog {source!r}: {exc}") from exc
    return _from_loaded(data, source)
