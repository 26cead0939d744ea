"""Operator commands of the ``pipeline-state`` CLI, one module per concern.

* :mod:`~pipeline_state_service.ops.views`: ``batch show``, ``runs stalled`` (read only);
* :mod:`~pipeline_state_service.ops.actions`: ``run cancel``, ``phase retry``, ``batch archive``;
* :mod:`~pipeline_state_service.ops.outbox`: ``outbox parked``, ``outbox republish``;
* :mod:`~pipeline_state_service.ops.dlq`: ``dlq reinject``;
* :mod:`~pipeline_state_service.ops.table`: the table the parser is built from;
* :mod:`~pipeline_state_service.ops.exits`: exit codes and one-line errors.

Every action is a command that :class:`~pipeline_state._service.PipelineService` handles:
deduplicated by the inbox under an event id derived from the action and its arguments,
decided by :func:`~pipeline_state._decide.decide` and written on the transition log with
who asked (``--as``).
"""

from __future__ import annotations

from .exits import ExitCode
from .table import SUBCOMMANDS, Subcommand

__all__ = ["SUBCOMMANDS", "ExitCode", "Subcommand"]
