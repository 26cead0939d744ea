"""Checking real Kafka records against an AsyncAPI document of pipeline-state.

:class:`WireChecker` takes a document made by :func:`pipeline_state._asyncapi.asyncapi_document`
(or served at ``/asyncapi.json``) and checks a record as a consumer would see it: the topic
has a channel with an operation of the expected action, the value matches the channel's
message payload (JSON Schema validation, formats included, with ``jsonschema-rs``, an extra
of the ``testing`` kit), the key is the one the message's Kafka binding names, and the
headers match the declared ones (a message that declares none allows none). Every check
raises :class:`AssertionError` saying what differs, so it reads well in a test.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

__all__ = ["WireChecker", "refs_in", "resolve"]


def resolve(document: Mapping[str, Any], ref: str) -> Any:
    """The part of ``document`` that the local ``$ref`` ``ref`` (``#/a/b``) points to;
    :class:`AssertionError` when it points nowhere."""
    if not ref.startswith("#/"):
        raise AssertionError(f"{ref!r} is not a local reference")
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise AssertionError(f"{ref!r} points nowhere (no {part!r})")
        node = node[part]
    return node


def refs_in(node: Any) -> Iterator[str]:
    """Every ``$ref`` value anywhere in ``node``."""
    if isinstance(node, Mapping):
        for name, value in node.items():
            if name == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


class WireChecker:
    """Checks records against ``document`` (see the module)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        import jsonschema_rs

        self.document = document
        self._validator_for = jsonschema_rs.validator_for
        self._validators: dict[str, Any] = {}

    def message(self, topic: str, action: Literal["receive", "send"]) -> Mapping[str, Any]:
        """The message of ``topic``'s channel, after checking that an operation ``action``\\ s it."""
        channel = self.document["channels"].get(topic)
        if channel is None:
            raise AssertionError(f"the document has no channel for topic {topic!r}")
        ref = f"#/channels/{topic}"
        actions = {
            op["action"] for op in self.document["operations"].values() if op["channel"]["$ref"] == ref
        }
        if action not in actions:
            raise AssertionError(f"no {action} operation on {topic!r} (only {sorted(actions)})")
        (message,) = channel["messages"].values()
        return dict(resolve(self.document, message["$ref"]))

    def _validate(self, where: str, schema: Mapping[str, Any], instance: object) -> None:
        validator = self._validators.get(where)
        if validator is None:
            components = self.document.get("components", {})
            validator = self._validator_for({**schema, "components": components}, validate_formats=True)
            self._validators[where] = validator
        errors = [
            f"{'/'.join(map(str, e.instance_path)) or '(root)'}: {e.message}"
            for e in validator.iter_errors(instance)
        ]
        if errors:
            raise AssertionError(f"{where} does not match the document:\n" + "\n".join(errors[:10]))

    def check(
        self,
        topic: str,
        *,
        action: Literal["receive", "send"],
        key: str | None,
        value: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Check one record (``headers`` ``None``: not checked)."""
        message = self.message(topic, action)
        self._validate(f"the value of a record on {topic!r}", message["payload"], value)
        binding = message.get("bindings", {}).get("kafka", {})
        location = binding.get("x-key-location")
        if binding.get("key", {}).get("type") == "null":
            expected: object = None
        elif isinstance(location, str):
            expected = resolve(value, location.removeprefix("$message.payload"))
        else:
            expected = key
        if key != expected:
            raise AssertionError(
                f"the key of a record on {topic!r} is {key!r}, the document says {expected!r}"
            )
        if headers is None:
            return
        declared = message.get("headers", {"type": "object", "maxProperties": 0})
        self._validate(f"the headers of a record on {topic!r}", declared, dict(headers))
