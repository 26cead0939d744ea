"""Profiles: the vocabulary a deployment plugs into the generic engine.

A :class:`Profile` names the pipelines (a :class:`~pipeline_state._catalog.Catalog`), the
command each phase is started with, the admission guards, the dispatch policy and the
limits the engine keeps: phase deadlines and re-sends, the size of the commands it builds
and how strictly it matches correlation ids. The shipped profiles live in
:mod:`pipeline_state.profiles`; :func:`pipeline_state.profiles.default_profile` builds the
default one.

**Commands that can always be published.** A phase command carries its items inline
(under the name its model declares, see :class:`CommandFields`). Every inbound id and list
is bounded (:mod:`pipeline_state._wire`), so the largest command a profile can build is known
in advance: :meth:`Profile.largest_command_bytes` of ``max_items_per_batch`` items
(:func:`command_size_bound` for a model's items, plus the dependency refs a fan-in command
lists, see :mod:`pipeline_state._fan_in`). Building a profile
checks that it fits ``max_command_bytes`` (default :data:`DEFAULT_MAX_COMMAND_BYTES`, under the producer's
1 MiB request limit) and raises :class:`~pipeline_state.errors.DefinitionError` naming the
numbers otherwise. As defense in depth (a state stored before the bounds existed), the
engine measures a command whose item count could exceed the limit before emitting it, and a
command that does is never built: the phase fails at once with ``command_too_large``.

**Checked when built.** Building a :class:`Profile` checks everything the engine will rely
on later, so a mistake fails at start-up with a :class:`~pipeline_state.errors.DefinitionError`
naming the profile and the culprit instead of mid-run (see :class:`Profile` for the list);
:func:`check_profile` rejects an object that is not a profile at all (a
:class:`~pipeline_state._catalog.Catalog` passed where a profile belongs).

**Deadlines.** A phase's deadline is, in order: the deployment's ``deadlines[phase]``
(``None`` there means no deadline), the catalog step's ``deadline_seconds``, then
``default_deadline_seconds`` (``None``: no deadline). When it passes without an outcome the
sweeper re-sends the phase's command with the same event id up to ``max_resends`` times,
each with a fresh deadline, and then fails the phase with ``timeout``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, get_args

import attrs
from pydantic import AliasChoices, BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from ._catalog import MAX_DEADLINE_SECONDS, Catalog, Step, check_deadline
from ._fan_in import EVERY_DEPENDENCY, DependencyRef, FanIn
from ._guards import AdmissionGuard
from ._inbound import Inbound
from ._inputs import ContentReady, GroupConfirmed, ItemsReady
from ._lifecycle import BATCH_LIFECYCLE, BatchStatus
from ._model import ItemRef
from ._names import StateNames
from ._outbound import Outbound
from ._snapshot import ViewNames
from ._wire import (
    DEAD_LETTER_SUFFIX,
    MAX_ID_LENGTH,
    MAX_ITEM_ID_LENGTH,
    MAX_ITEMS_PER_BATCH,
    WireModel,
    is_id_text,
)
from .errors import DefinitionError

__all__ = [
    "COMMAND_OVERHEAD_BYTES",
    "DEFAULT_MAX_COMMAND_BYTES",
    "DEFAULT_MAX_RESENDS",
    "ENGINE_COMMAND_FIELDS",
    "CommandFields",
    "CommandSpec",
    "Profile",
    "check_profile",
    "command_fields",
    "command_size_bound",
]

DEFAULT_MAX_COMMAND_BYTES = 900_000
"""Default upper bound on an encoded phase command (its envelope as UTF-8 JSON): below
aiokafka's default ``max_request_size`` of 1,048,576 bytes, with room for the record's key,
headers and batch framing."""

COMMAND_OVERHEAD_BYTES = 8_192
"""What a phase command may take besides its item list, at most: the envelope (ids, topic,
timestamp, source, metadata) and every other field (batch id, group id, language, category
code) at their bounds, four bytes per character: about 4.5 kB, rounded up."""

DEFAULT_MAX_RESENDS = 2
"""How many times an overdue phase's command is re-sent before the phase fails."""


@attrs.frozen
class CommandFields:
    """The names under which the engine fills a command it builds, and the keys of each item
    in the command's list of items.

    A command model declares its names as a class attribute ``command_fields`` (subclasses
    inherit it); a model without one gets the engine's own names (:data:`ENGINE_COMMAND_FIELDS`).
    The engine fills exactly :attr:`phase` in a phase command and :attr:`matching` in the
    group-matching command; ``group_id`` is ``None`` for a batch registered without a group.
    """

    batch_id: str = "batch_id"
    items: str = "items"
    item_id: str = "item_id"
    content_ref: str = "content_ref"
    language: str = "language"
    category: str = "category"
    group_id: str = "group_id"
    dependency_refs: str | None = None
    """The key, in each item of a fan-in phase's command, of the list of its dependencies'
    refs (see :mod:`pipeline_state._fan_in`); ``None``: the model has no such list."""
    dependency: str = "phase"
    """The key of a dependency's phase name in each entry of that list (its ref is under
    :attr:`content_ref`)."""

    def __attrs_post_init__(self) -> None:
        """Refuse names under which one value would overwrite another: the command's own
        fields, the keys of an item, and the keys of an entry of its dependencies' refs."""
        for where, names in (
            ("command fields", (self.batch_id, self.items, self.language, self.category, self.group_id)),
            ("item keys", (self.item_id, self.content_ref, self.dependency_refs)),
            ("dependency ref keys", (self.dependency, self.content_ref)),
        ):
            given = [n for n in names if n is not None]
            if not all(isinstance(n, str) and n for n in given):
                raise DefinitionError("command_fields", f"{where} must be non-empty strings, got {given!r}")
            if len(set(given)) != len(given):
                raise DefinitionError(
                    "command_fields",
                    f"{where} must be distinct names (one would overwrite another), got {given!r}",
                )

    @property
    def phase(self) -> frozenset[str]:
        """The fields of a phase command."""
        return frozenset({self.batch_id, self.items, self.language, self.category, self.group_id})

    @property
    def matching(self) -> frozenset[str]:
        """The fields of the group-matching command."""
        return frozenset({self.batch_id, self.group_id, self.items})

    @property
    def item_ref_max_bytes(self) -> int:
        """The most one item of the list takes as UTF-8 JSON: two ids of
        :data:`~pipeline_state._wire.MAX_ITEM_ID_LENGTH` characters, at most 4 bytes each (ids
        hold no control characters, the only ones JSON escapes to more)."""
        return len(f'{{"{self.item_id}":"","{self.content_ref}":""}},') + 2 * MAX_ITEM_ID_LENGTH * 4

    def listed_refs_max_bytes(self, dependencies: Sequence[str]) -> int:
        """The most the list of ``dependencies``' refs adds to one item as UTF-8 JSON (0
        when the model declares no :attr:`dependency_refs`)."""
        if self.dependency_refs is None:
            return 0
        entry = len(f'{{"{self.dependency}":,"{self.content_ref}":""}},') + MAX_ITEM_ID_LENGTH * 4
        names = sum(len(json.dumps(phase).encode()) for phase in dependencies)
        return len(f',"{self.dependency_refs}":[]') + len(dependencies) * entry + names

    def item(self, ref: ItemRef) -> dict[str, str | None]:
        """One item of the list, as the command models validate it."""
        return {self.item_id: ref.item_id, self.content_ref: ref.content_ref}

    def items_of(self, refs: Iterable[ItemRef]) -> list[dict[str, str | None]]:
        """The list of ``refs``, each as :meth:`item` gives it (one call for the whole list)."""
        item_id, content_ref = self.item_id, self.content_ref
        return [{item_id: ref.item_id, content_ref: ref.content_ref} for ref in refs]

    def listing(self, ref: ItemRef, refs: Sequence[DependencyRef]) -> dict[str, Any]:
        """One item of a fan-in phase's list that also lists its dependencies' ``refs``
        (under :attr:`dependency_refs`, which must be set)."""
        assert self.dependency_refs is not None
        listed = [{self.dependency: r.phase, self.content_ref: r.content_ref} for r in refs]
        return {self.item_id: ref.item_id, self.content_ref: ref.content_ref, self.dependency_refs: listed}


ENGINE_COMMAND_FIELDS = CommandFields()
"""The engine's own names, for command models that declare none."""


def command_fields(model: type[WireModel]) -> CommandFields:
    """The names ``model`` declares (its ``command_fields`` class attribute), else the engine's."""
    found = getattr(model, "command_fields", None)
    return found if isinstance(found, CommandFields) else ENGINE_COMMAND_FIELDS


def command_size_bound(items: int, fields: CommandFields = ENGINE_COMMAND_FIELDS) -> int:
    """The most bytes a phase command of ``items`` items can take (see the module), its items
    named as ``fields`` names them."""
    return COMMAND_OVERHEAD_BYTES + items * fields.item_ref_max_bytes


_BATCH_NAMES = frozenset((*(s.value for s in BatchStatus), *BATCH_LIFECYCLE.triggers))
"""The names :attr:`Profile.state_names` may rename: batch statuses and batch triggers."""


@attrs.frozen
class CommandSpec:
    """The topic and payload model of the command that starts a phase.

    ``model`` is a :class:`~pipeline_state._wire.WireModel` subclass whose required fields are
    among those the engine fills, under the names the model declares (:class:`CommandFields`:
    :attr:`~CommandFields.phase`, or :attr:`~CommandFields.matching` for the group-matching
    command); :class:`Profile` checks it when built.
    """

    topic: str
    model: type[WireModel]


def _check_max_parallel(_: object, __: attrs.Attribute[int | None], value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise DefinitionError(
            "profile", f"max_parallel must be a whole number or None, got {type(value).__name__} {value!r}"
        )
    if value < 1:
        raise DefinitionError("profile", f"max_parallel must be at least 1, got {value}")


def _check_seconds(where: str, value: object) -> float | None:
    if value is None:
        return None
    if check_deadline(value) is not None:
        raise DefinitionError(
            "profile",
            f"{where} must be a positive number of seconds, at most {MAX_DEADLINE_SECONDS} "
            f"(ten years), or None, got {value!r}",
        )
    return float(value)  # type: ignore[arg-type]  # check_deadline saw a number


def _freeze(value: Mapping[str, float | None]) -> Mapping[str, float | None]:
    if not isinstance(value, Mapping):
        raise DefinitionError(
            "profile", f"deadlines must be a mapping of phase name to seconds, got {_kind(value)}"
        )
    return MappingProxyType(dict(value))


def _kind(value: object) -> str:
    """``type value`` for a message, the value cut short."""
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{type(value).__name__} {shown}"


def _check_text(profile: str, what: str, value: object) -> str:
    """``value`` if it can travel as an envelope id (1-200 characters, no control ones)."""
    if not isinstance(value, str):
        raise DefinitionError(profile, f"{what} must be a string, got {_kind(value)}")
    if not value.strip() or not is_id_text(value):
        raise DefinitionError(
            profile,
            f"{what} must be 1 to {MAX_ID_LENGTH} characters without control characters "
            f"(it travels in every envelope), got {value!r:.80}",
        )
    return value


def _input_keys(name: str, field: FieldInfo, config: Mapping[str, Any]) -> frozenset[str]:
    """The keys of the input dict that can fill the field ``name`` of a model."""
    if config.get("validate_by_alias") is False:
        return frozenset({name})
    alias = field.validation_alias if field.validation_alias is not None else field.alias
    keys: set[str] = set()
    if alias is None:
        keys.add(name)
    elif isinstance(alias, str):
        keys.add(alias)
    elif isinstance(alias, AliasChoices):
        keys.update(choice for choice in alias.choices if isinstance(choice, str))
    if alias is not None and (config.get("populate_by_name") or config.get("validate_by_name")):
        keys.add(name)
    return frozenset(keys)


def _check_command(profile: str, where: str, spec: object, *, matching: bool) -> CommandSpec:
    """``spec`` if it is a command the engine can build: a phase command, or the
    group-matching command when ``matching`` (whose group is never ``None``)."""
    if not isinstance(spec, CommandSpec):
        raise DefinitionError(profile, f"{where} must be a CommandSpec(topic, model), got {_kind(spec)}")
    _check_text(profile, f"the topic of {where}", spec.topic)
    model: object = spec.model
    if not isinstance(model, type) or not issubclass(model, BaseModel):
        raise DefinitionError(
            profile, f"the model of {where} must be a pydantic model class, got {_kind(model)}"
        )
    if not issubclass(model, WireModel):
        raise DefinitionError(
            profile,
            f"the model of {where}, {model.__qualname__}, must derive from "
            "pipeline_state._wire.WireModel (frozen, ignores the fields it does not declare), "
            "usually through PhaseInitiateCommand",
        )
    names = command_fields(model)
    fills = names.matching if matching else names.phase
    fields = [
        (name, field, _input_keys(name, field, model.model_config))
        for name, field in model.model_fields.items()
    ]
    filled: set[str] = set()
    for _, _, keys in fields:
        filled |= keys
    unfillable = [name for name, field, keys in fields if field.is_required() and not keys & fills]
    if unfillable:
        raise DefinitionError(
            profile,
            f"the model of {where}, {model.__qualname__}, requires {unfillable}, which the engine "
            f"cannot fill: it fills exactly {sorted(fills)}; give those fields a default or drop them",
        )
    if model.model_config.get("extra") == "forbid":
        undeclared = sorted(fills - filled)
        if undeclared:
            raise DefinitionError(
                profile,
                f"the model of {where}, {model.__qualname__}, forbids extra fields but does not "
                f"declare {undeclared}, which the engine always passes: drop extra='forbid'",
            )
    if not matching:
        for name, field, keys in fields:
            if names.group_id in keys and not _accepts_none(field):
                raise DefinitionError(
                    profile,
                    f"the model of {where}, {model.__qualname__}, does not accept None for "
                    f"{name!r}, but the engine fills it with the batch's group ({names.group_id}), "
                    "None for a batch registered without one: declare it `str | None`",
                )
    return spec


def _item_model(model: type[WireModel], names: CommandFields) -> type[BaseModel] | None:
    """The model of the items of ``model``'s list (:attr:`CommandFields.items`), if it has
    one (a list of dicts has none)."""
    for name, field in model.model_fields.items():
        if names.items in _input_keys(name, field, model.model_config):
            todo: list[object] = [field.annotation]
            while todo:
                found = todo.pop()
                if isinstance(found, type) and issubclass(found, BaseModel):
                    return found
                todo.extend(get_args(found))
    return None


def _field_for(model: type[BaseModel], key: str) -> FieldInfo | None:
    """The field of ``model`` that ``key`` fills, if any."""
    for name, field in model.model_fields.items():
        if key in _input_keys(name, field, model.model_config):
            return field
    return None


def _accepts_none(field: FieldInfo) -> bool:
    try:
        TypeAdapter(field.rebuild_annotation()).validate_python(None)
    except ValidationError:
        return False
    except Exception:  # an annotation pydantic cannot build alone: leave it to the model
        return True
    return True


@attrs.frozen
class Profile:
    """Everything deployment-specific the engine needs; validated when built.

    ``strict_correlation``: an outcome whose correlation id belongs to no run of the batch
    is ignored as ``stale_run`` (the old rule) instead of being applied to the active run
    and flagged ``correlation_mismatch``. ``group_matching``: the command that asks for
    the members of a batch registered with a group; without it every batch takes the
    content-only readiness path (see :attr:`group_validation`). The other settings are
    described in the module.

    Building a profile raises :class:`~pipeline_state.errors.DefinitionError`, naming the
    profile and the culprit, when:

    * a setting has the wrong type: ``name`` or ``source_service`` not a short string,
      ``catalog`` not a :class:`~pipeline_state._catalog.Catalog`, a ``phase_commands`` value
      or ``group_matching`` not a :class:`CommandSpec`, a command model that is not a
      :class:`~pipeline_state._wire.WireModel` class, a guard without a callable ``check``
      (or a guard class instead of an instance);
    * a command model requires a field the engine cannot fill (it fills exactly
      :attr:`CommandFields.phase`, or :attr:`CommandFields.matching` for group matching),
      forbids a field the engine passes, or refuses ``None`` for the group;
    * two phases share a command topic, or the group-matching command uses a phase's; a
      command topic is one the profile consumes (its ``inbound``) or
      the topic of one of the events the profile announces (:meth:`event_topics`);
    * a catalog phase has no command, or a command names a phase the catalog does not have;
    * a readiness path would strand a batch: the ``inbound`` consumes no
      :class:`~pipeline_state._inputs.ContentReady`, or the profile has ``group_matching``
      but its ``inbound`` carries no :class:`~pipeline_state._inputs.GroupConfirmed` or no
      :class:`~pipeline_state._inputs.ItemsReady` (a batch with a group would wait for it
      forever);
    * ``fan_in`` is not a merge policy, or it lists the dependencies' refs and a fan-in
      phase's command model declares no place for them
      (:attr:`CommandFields.dependency_refs`), or a model declares one its items lack or
      require;
    * a deadline, ``max_resends``, ``max_parallel``, ``max_items_per_batch`` or
      ``max_command_bytes`` is out of range (see the module).

    Once built, a profile is immutable (its mappings are read-only copies), so the checks
    hold for its lifetime; :func:`check_profile` only has to check the type.
    """

    name: str
    catalog: Catalog
    phase_commands: Mapping[str, CommandSpec]
    group_matching: CommandSpec | None = None
    guards: tuple[AdmissionGuard, ...] = ()
    max_parallel: int | None = attrs.field(default=None, validator=_check_max_parallel)
    source_service: str = "pipeline-state"
    strict_correlation: bool = False
    deadlines: Mapping[str, float | None] = attrs.field(factory=dict, converter=_freeze)
    default_deadline_seconds: float | None = None
    max_resends: int = DEFAULT_MAX_RESENDS
    max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES
    max_items_per_batch: int = MAX_ITEMS_PER_BATCH
    item_kind: str = "item"
    """The word in the ids the engine derives for the items of a registration that names
    none (``derive_id(batch_id, item_kind, index)``); changing it changes those ids."""
    outbound: Outbound = attrs.field(factory=lambda: _default_wire()[1])
    """How the profile words what the engine announces (see :mod:`pipeline_state._outbound`);
    the default profile's wording unless given."""
    inbound: Inbound = attrs.field(factory=lambda: _default_wire()[0])
    """What the profile's service consumes and how each message reads as an engine input
    (see :mod:`pipeline_state._inbound`)."""
    view_names: ViewNames = attrs.field(factory=ViewNames)
    """The keys the batch view (:func:`~pipeline_state._snapshot.snapshot`: the runtime's
    and the HTTP API's) gives the owner, the group and the number of items."""
    state_names: StateNames = attrs.field(factory=StateNames, converter=StateNames)
    """The profile's names for batch states and triggers its wire knew by other names
    (:class:`~pipeline_state._names.StateNames`; a mapping converts): refusal reasons and
    details, waiting-fact keys and batch views show them."""
    fan_in: FanIn = EVERY_DEPENDENCY
    """How a phase with several dependencies gets their refs, item by item (a merge policy,
    see :mod:`pipeline_state._fan_in`): by default its command lists every dependency's ref,
    which its model must have room for (:attr:`CommandFields.dependency_refs`);
    :data:`~pipeline_state._fan_in.LAST_DEPENDENCY` carries only the last one's."""
    measure_above_items: int = attrs.field(init=False, default=0)
    """Commands of more items than this are measured before they are built (derived)."""

    def __attrs_post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError(
                "profile", f"a profile's name must be a non-empty string, got {_kind(name)}"
            )
        _check_text("profile", "a profile's name (shown in titles, logs and documents)", name)
        self._check_types()
        self._check_readiness()
        catalog_phases = set(self.catalog.phases)
        missing = [phase for phase in self.catalog.phases if phase not in self.phase_commands]
        if missing:
            raise DefinitionError(self.name, f"no command declared for phases {missing}")
        extra = [phase for phase in self.phase_commands if phase not in catalog_phases]
        if extra:
            raise DefinitionError(
                self.name,
                f"commands declared for phases that are not in the catalog: {extra} "
                f"(the catalog's phases are {list(self.catalog.phases)})",
            )
        self._check_topics()
        self._check_fan_in()
        unknown = [phase for phase in self.deadlines if phase not in self.catalog.phases]
        if unknown:
            raise DefinitionError(self.name, f"deadlines name phases that are not in the catalog: {unknown}")
        for phase, seconds in self.deadlines.items():
            _check_seconds(f"deadlines[{phase!r}]", seconds)
        default = _check_seconds("default_deadline_seconds", self.default_deadline_seconds)
        object.__setattr__(self, "default_deadline_seconds", default)
        if (
            isinstance(self.max_resends, bool)
            or not isinstance(self.max_resends, int)
            or self.max_resends < 0
        ):
            raise DefinitionError(
                self.name, f"max_resends must be a whole number >= 0, got {self.max_resends!r}"
            )
        items = self.max_items_per_batch
        if isinstance(items, bool) or not isinstance(items, int) or not 1 <= items <= MAX_ITEMS_PER_BATCH:
            raise DefinitionError(
                self.name,
                f"max_items_per_batch must be between 1 and {MAX_ITEMS_PER_BATCH} (the wire bound), "
                f"got {items!r}",
            )
        limit = self.max_command_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= COMMAND_OVERHEAD_BYTES:
            raise DefinitionError(
                self.name,
                f"max_command_bytes must be a whole number above {COMMAND_OVERHEAD_BYTES}, got {limit!r}",
            )
        per_item = self.item_max_bytes()
        worst = self.largest_command_bytes(items)
        if worst > limit:
            fits = (limit - COMMAND_OVERHEAD_BYTES) // per_item
            raise DefinitionError(
                self.name,
                f"a phase command of max_items_per_batch={items} items may take up to {worst} bytes "
                f"({COMMAND_OVERHEAD_BYTES} + {items} x {per_item}), more than "
                f"max_command_bytes={limit}: allow at most {fits} items or raise max_command_bytes",
            )
        object.__setattr__(self, "measure_above_items", (limit - COMMAND_OVERHEAD_BYTES) // per_item)

    def fan_in_phases(self) -> tuple[str, ...]:
        """The catalog's phases with several dependencies, in first-seen order."""
        catalog = self.catalog
        return tuple(p for p in catalog.phases if len(catalog.step_definition(p).depends_on) > 1)

    def item_max_bytes(self, phase: str | None = None) -> int:
        """The most one item of ``phase``'s command takes as UTF-8 JSON, its dependencies'
        refs included when the merge lists them (see :mod:`pipeline_state._fan_in`); without
        ``phase``, the most over every phase."""
        if phase is None:
            return max(
                (self.item_max_bytes(p) for p in self.phase_commands),
                default=ENGINE_COMMAND_FIELDS.item_ref_max_bytes,
            )
        names = command_fields(self.phase_commands[phase].model)
        depends_on = self.catalog.step_definition(phase).depends_on
        listed = (
            names.listed_refs_max_bytes(depends_on) if self.fan_in.lists_refs and len(depends_on) > 1 else 0
        )
        return names.item_ref_max_bytes + listed

    def largest_command_bytes(self, items: int) -> int:
        """The most bytes a phase command of ``items`` items of this profile can take (see
        the module): what ``max_command_bytes`` must allow for batches of that many."""
        return COMMAND_OVERHEAD_BYTES + items * self.item_max_bytes()

    def _check_fan_in(self) -> None:
        """The merge policy, and room for what it lists in the commands of fan-in phases."""
        name, policy = self.name, self.fan_in
        if isinstance(policy, type):
            raise DefinitionError(
                name,
                f"fan_in is the class {policy.__qualname__}, not a merge policy: "
                f"pass an instance ({policy.__qualname__}())",
            )
        lists = getattr(policy, "lists_refs", None)
        if not callable(getattr(policy, "merge", None)) or not isinstance(lists, bool):
            raise DefinitionError(
                name,
                f"fan_in ({_kind(policy)}) must have a bool lists_refs and a callable merge(item) "
                "returning a Merged: see pipeline_state._fan_in (EVERY_DEPENDENCY, LAST_DEPENDENCY)",
            )
        for phase, spec in self.phase_commands.items():
            names = command_fields(spec.model)
            if names.dependency_refs is None:
                continue
            item = _item_model(spec.model, names)
            field = None if item is None else _field_for(item, names.dependency_refs)
            if item is not None and field is None:
                raise DefinitionError(
                    name,
                    f"the model of phase {phase!r}, {spec.model.__qualname__}, declares "
                    f"dependency_refs={names.dependency_refs!r}, but its items "
                    f"({item.__qualname__}) have no such field: the listed refs would be dropped",
                )
            if field is not None and field.is_required():
                raise DefinitionError(
                    name,
                    f"the model of phase {phase!r}, {spec.model.__qualname__}, requires "
                    f"{names.dependency_refs!r} in each item, which the engine fills only in the "
                    "commands of fan-in phases: give it a default (an empty list)",
                )
        if not lists:
            return
        for phase in self.fan_in_phases():
            model = self.phase_commands[phase].model
            if command_fields(model).dependency_refs is None:
                raise DefinitionError(
                    name,
                    f"phase {phase!r} has several dependencies and fan_in={_kind(policy)} lists each "
                    f"one's ref, but its model {model.__qualname__} declares no place for them: set "
                    "dependency_refs in its command_fields (CommandFields) and give its items that "
                    "field, or choose fan_in=LAST_DEPENDENCY (one ref per item, the last dependency's)",
                )

    def _check_types(self) -> None:
        """The settings' types, the commands' models and the guards (see the class)."""
        name = self.name
        _check_text(name, "source_service", self.source_service)
        _check_text(name, "item_kind", self.item_kind)
        if not isinstance(self.view_names, ViewNames):
            raise DefinitionError(name, f"view_names must be a ViewNames, got {_kind(self.view_names)}")
        problem = self.view_names.problem()
        if problem is not None:
            raise DefinitionError(name, f"view_names: {problem}")
        self.state_names.check(name, _BATCH_NAMES)
        if not isinstance(self.catalog, Catalog):
            hint = " (build it with Catalog.from_dict)" if isinstance(self.catalog, Mapping) else ""
            raise DefinitionError(name, f"catalog must be a Catalog, got {_kind(self.catalog)}{hint}")
        if not isinstance(self.strict_correlation, bool):
            raise DefinitionError(
                name, f"strict_correlation must be a bool, got {_kind(self.strict_correlation)}"
            )
        commands: object = self.phase_commands
        if not isinstance(commands, Mapping):
            raise DefinitionError(
                name, f"phase_commands must map phase names to CommandSpec, got {_kind(commands)}"
            )
        for phase, spec in commands.items():
            if not isinstance(phase, str):
                raise DefinitionError(name, f"phase_commands keys must be phase names, got {_kind(phase)}")
            _check_command(name, f"phase {phase!r}", spec, matching=False)
        object.__setattr__(self, "phase_commands", MappingProxyType(dict(commands)))
        if self.group_matching is not None:
            _check_command(name, "group_matching", self.group_matching, matching=True)
        guards: object = self.guards
        if not isinstance(guards, tuple | list):
            raise DefinitionError(name, f"guards must be a tuple of admission guards, got {_kind(guards)}")
        for position, guard in enumerate(guards):
            if isinstance(guard, type):
                raise DefinitionError(
                    name,
                    f"guard {position} is the class {guard.__qualname__}, not a guard: "
                    f"pass an instance ({guard.__qualname__}(...))",
                )
            if not callable(getattr(guard, "check", None)):
                raise DefinitionError(
                    name, f"guard {position} ({_kind(guard)}) has no callable check(request)"
                )
        object.__setattr__(self, "guards", tuple(guards))
        for method in _OUTBOUND_METHODS:
            if not callable(getattr(self.outbound, method, None)):
                raise DefinitionError(
                    name, f"outbound ({_kind(self.outbound)}) has no callable {method}(...): see Outbound"
                )
        if not isinstance(self.inbound, Inbound):
            raise DefinitionError(name, f"inbound must be an Inbound, got {_kind(self.inbound)}")

    def _check_readiness(self) -> None:
        """Every readiness path the profile's batches can take has an inbound topic for each
        of its steps, so that no batch waits for an input its service never consumes."""
        if self.inbound.topic_of(ContentReady) is None:
            waits = self.state_names.show(BatchStatus.AWAITING_CONTENT_VALIDATION.value)
            raise DefinitionError(
                self.name,
                f"the inbound consumes no topic carrying ContentReady: every batch would wait in "
                f"{waits} forever; add an InboundTopic whose kind is ContentReady",
            )
        if self.group_matching is None:
            return
        missing = [
            kind.__name__ for kind in (GroupConfirmed, ItemsReady) if self.inbound.topic_of(kind) is None
        ]
        if missing:
            waits = self.state_names.show(BatchStatus.AWAITING_GROUP_VALIDATION.value)
            raise DefinitionError(
                self.name,
                f"group_matching is set, so a batch registered with a group waits in {waits} "
                f"until GroupConfirmed and then ItemsReady arrive, but the inbound consumes no topic "
                f"carrying {' or '.join(missing)}: such a batch would never be ready; add an "
                f"InboundTopic of kind {' and one of kind '.join(missing)}, or drop group_matching "
                "(every batch then takes the content-only path)",
            )

    def _check_topics(self) -> None:
        """Each command on a topic of its own, none on a topic the engine reads or writes."""
        phase_on: dict[str, str] = {}
        for phase, spec in self.phase_commands.items():
            first = phase_on.setdefault(spec.topic, phase)
            if first != phase:
                raise DefinitionError(
                    self.name,
                    f"phases {first!r} and {phase!r} share the command topic {spec.topic!r}: "
                    "a worker could not tell their commands apart; give each phase its own topic",
                )
        owners = {topic: f"phase {phase!r}" for topic, phase in phase_on.items()}
        matching = self.group_matching
        if matching is not None:
            other = owners.get(matching.topic)
            if other is not None:
                raise DefinitionError(
                    self.name,
                    f"the group_matching command uses {matching.topic!r}, the command topic "
                    f"of {other}: give it a topic of its own",
                )
            owners[matching.topic] = "group_matching"
        events = self.event_topics()
        for topic, announced in events.items():  # each travels as its envelopes' event type
            _check_text(self.name, f"the topic of the {announced} event", topic)
        letters = {f"{topic}{DEAD_LETTER_SUFFIX}": topic for topic in self.inbound.topics}
        for topic, owner in owners.items():
            if topic in self.inbound:
                raise DefinitionError(
                    self.name,
                    f"the command of {owner} uses {topic!r}, an inbound topic the engine "
                    "consumes: it would read its own commands back",
                )
            if topic in letters:
                raise DefinitionError(
                    self.name,
                    f"the command of {owner} uses {topic!r}, where the dead letters of the "
                    f"consumed topic {letters[topic]!r} go: its workers would receive them",
                )
            event = events.get(topic)
            if event is not None:
                raise DefinitionError(
                    self.name,
                    f"the command of {owner} uses {topic!r}, the topic of the engine's own "
                    f"{event} event: consumers of that event would receive it",
                )
        for topic, event in events.items():
            if topic in self.inbound or topic in letters:
                raise DefinitionError(
                    self.name,
                    f"the {event} event goes to {topic!r}, a topic the engine consumes (or "
                    "its dead letters): it would read its own events back",
                )

    def event_topics(self) -> Mapping[str, str]:
        """The topics of the events the profile announces, each with what it announces: the
        outbound's ``event_topics`` mapping when it declares one (it may name topics other
        services of the profile write to), else what
        :func:`~pipeline_state._announced.announced_events` finds it writes."""
        declared = getattr(self.outbound, "event_topics", None)
        if isinstance(declared, Mapping):
            return declared
        from ._announced import announced_events  # it imports the engine's model

        return {a.topic: a.announces[0].split(":")[0] for a in announced_events(self.name, self.outbound)}

    @property
    def runs_remembered(self) -> int:
        """How many acceptance times of archived runs a batch's summary keeps
        (:attr:`~pipeline_state._model.Past.accepted`): the most any of the profile's guards
        counts (a guard that counts past runs says how many with a ``runs_remembered``
        attribute, as :class:`~pipeline_state._guards.RateLimitGuard` does); 0 without one."""
        return max((int(getattr(guard, "runs_remembered", 0)) for guard in self.guards), default=0)

    @property
    def group_validation(self) -> bool:
        """Whether a batch registered with a group waits for group validation: ``True``
        exactly when the profile has ``group_matching``.

        With it, content provisioning of such a batch sends the matching command and the
        batch waits (in the lifecycle's group-validation state) for the associations and the
        ready items. Without it nothing would ever confirm the members, so every batch takes the
        content-only readiness path: provisioning makes it ready for pipelines at once,
        group or not. A batch registered without a group is content-only in every profile.
        """
        return self.group_matching is not None

    def is_phase(self, name: str) -> bool:
        return name in self.phase_commands

    def deadline_for(self, step: Step) -> float | None:
        """The deadline (seconds) of ``step`` in a run: the deployment's ``deadlines``,
        else the catalog's, else ``default_deadline_seconds``; ``None`` for none."""
        if step.name in self.deadlines:
            return self.deadlines[step.name]
        if step.deadline_seconds is not None:
            return step.deadline_seconds
        return self.default_deadline_seconds


def _default_wire() -> tuple[Inbound, Outbound]:
    from .profiles import default_wire  # the shipped profiles build on this module

    return default_wire()


_OUTBOUND_METHODS = ("registered", "phase_skipped", "denied", "completed", "notify")


def check_profile(obj: object) -> Profile:
    """``obj`` if it is a :class:`Profile`, else :class:`~pipeline_state.errors.DefinitionError`.

    A profile was checked when it was built (see :class:`Profile`) and cannot change, so
    this only checks the type: it is cheap and pure, meant for the entry points that take a
    profile (a service, a runtime), so that passing something else fails there, naming what
    was passed, instead of mid-run with an ``AttributeError``.
    """
    if isinstance(obj, Profile):
        return obj
    if isinstance(obj, Catalog):
        hint = _catalog_hint(obj)
    else:
        hint = ": build one with Profile(...) or pipeline_state.profiles.default_profile()"
    raise DefinitionError("profile", f"expected a pipeline_state.Profile, got {_kind(obj)}{hint}")


def _catalog_hint(catalog: Catalog) -> str:
    """How to make a profile of ``catalog``: a :class:`Profile` with a command per phase, or
    the default profile's factory when the default profile has a command for every phase."""
    from .profiles import DEFAULT_PROFILE, default_profile  # they import this module

    phases = list(catalog.phases)
    wrap = (
        ": a Catalog only holds the pipelines; wrap it in a profile, Profile(name=..., "
        f"catalog=catalog, phase_commands={{phase: CommandSpec(topic, Model)}}) for its phases {phases}"
    )
    factory = DEFAULT_PROFILE.replace(":", ".")
    known = default_profile().phase_commands
    foreign = [phase for phase in phases if phase not in known]
    if foreign:
        return f"{wrap} (the default profile, {factory}, has no command for {foreign})"
    return f"{wrap}, or {factory}(catalog=catalog)"
