"""The composition root's errors, in the library's tree (:mod:`pipeline_state.errors`)::

    PipelineStateError
    ├── SettingsError (also a ValueError)   a flag or variable of ``serve`` is unusable
    ├── UnknownConsumerError                ``--consumers`` names a consumer nobody provides
    └── OperatorError                       an operator command failed, with its exit code

The adapters' settings errors (:class:`~pipeline_state_sql.SqlSettingsError`,
:class:`~pipeline_state_kafka.KafkaSettingsError`,
:class:`~pipeline_state_http.HttpSettingsError`) reach ``serve`` as a :class:`SettingsError`
with the same message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline_state.errors import PipelineStateError

if TYPE_CHECKING:
    from .ops.exits import ExitCode

__all__ = ["OperatorError", "SettingsError", "UnknownConsumerError"]


class SettingsError(PipelineStateError, ValueError):
    """A flag or environment variable has an unusable value (the message names it)."""


class UnknownConsumerError(PipelineStateError):
    """``--consumers`` names a consumer that no registry, entry point or module provides."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"unknown consumer {name!r}: {reason}")


class OperatorError(PipelineStateError):
    """A failure of an operator command that carries its own exit code."""

    def __init__(self, code: ExitCode, message: str) -> None:
        self.code = code
        super().__init__(message)
