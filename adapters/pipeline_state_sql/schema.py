"""The tables, as SQLAlchemy Core metadata (the Alembic migrations build the same schema).

* ``batches``: the current state of each batch (a JSON document) with its version for
  compare-and-set, its status and its next phase deadline for the hot queries.
* ``runs``: archived runs, one row per run in a batch's history (position ``seq``),
  queryable by batch and by completion time.
* ``transitions``: the transition log (which entity moved from which state to which, on
  which event, with which correlation id, when, and who asked when an operator did).
* ``outbox``: messages to publish, with delivery bookkeeping (attempts, backoff, parking)
  and a claim lease so several relays never publish the same row at once.
* ``inbox``: the ids of processed inbound events and what processing them did.
* ``waiting``: early facts kept until their batch gets where they apply (the raw message
  as received, what it waits for, arrival time and order ``seq``).

The results read model (:mod:`pipeline_state_sql.results_store`) adds four tables:

* ``results_batches``: one read model per batch (a JSON document) with its version for
  compare-and-set and the ``status``, ``user_id`` and ``class_id`` it is listed by.
* ``results_classes`` and ``results_class_status``: per class, the batch and essay counts
  and the number of batches in each status, only ever changed by adding deltas.
* ``results_inbox``: the ids of events the results projection processed, per event type
  (pruned by age).

Its announcements go to the same ``outbox`` table.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)

from pipeline_state._wire import MAX_ID_LENGTH

from .columns import COUNT, JSON_DOCUMENT, ROW_ID, UtcDateTime

__all__ = [
    "BATCHES",
    "INBOX",
    "METADATA",
    "OUTBOX",
    "RESULTS_BATCHES",
    "RESULTS_CLASSES",
    "RESULTS_CLASS_STATUS",
    "RESULTS_INBOX",
    "RUNS",
    "TRANSITIONS",
    "WAITING",
]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

METADATA = MetaData(naming_convention=NAMING)

ID = MAX_ID_LENGTH  # length of id columns (batch, run, event, correlation ids): the wire bound

BATCHES = Table(
    "batches",
    METADATA,
    Column("batch_id", String(ID), primary_key=True),
    Column("status", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("state", JSON_DOCUMENT, nullable=False),
    Column("next_deadline_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_batches_status_batch_id", "status", "batch_id"),
    Index("ix_batches_next_deadline_at", "next_deadline_at"),
    # Stalled runs: processing batches, least recently changed first.
    Index("ix_batches_status_updated_at", "status", "updated_at"),
)

RUNS = Table(
    "runs",
    METADATA,
    Column("batch_id", String(ID), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("run_id", String(ID), nullable=False),
    Column("pipeline_name", String(200), nullable=False),
    Column("final_status", String(64), nullable=False),
    Column("correlation_id", String(ID), nullable=False),
    Column("accepted_at", UtcDateTime, nullable=False),
    Column("completed_at", UtcDateTime, nullable=True),
    Column("document", JSON_DOCUMENT, nullable=False),
    Index("ix_runs_completed_at", "completed_at"),
    Index("ix_runs_run_id", "run_id"),
)

TRANSITIONS = Table(
    "transitions",
    METADATA,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("batch_id", String(ID), nullable=False),
    Column("entity", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("trigger", String(100), nullable=False),
    Column("source", String(64), nullable=False),
    Column("dest", String(64), nullable=False),
    Column("run_id", String(ID), nullable=True),
    Column("event_id", String(ID), nullable=False),
    Column("correlation_id", String(ID), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("note", String(200), nullable=True),
    Column("requested_by", String(ID), nullable=True),
    Index("ix_transitions_batch_id_id", "batch_id", "id"),
    sqlite_autoincrement=True,
)

OUTBOX = Table(
    "outbox",
    METADATA,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("event_id", String(ID), nullable=False, unique=True),
    Column("topic", String(255), nullable=False),
    Column("key", String(ID), nullable=True),
    Column("envelope", JSON_DOCUMENT, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    Column("parked", Boolean, nullable=False, server_default=false()),
    Column("available_at", UtcDateTime, nullable=False),
    Column("claimed_until", UtcDateTime, nullable=True),
    Column("claimed_by", String(64), nullable=True),
    # W3C trace-context headers of the decision that wrote the row (JSON object), or NULL.
    Column("trace_context", Text, nullable=True),
    # The relay's scan: pending rows in id order (partial: published rows drop out).
    Index(
        "ix_outbox_pending",
        "id",
        sqlite_where=text("published_at IS NULL AND parked = 0"),
        postgresql_where=text("published_at IS NULL AND NOT parked"),
    ),
    # Order per key: "is there an older pending row with this key?"
    Index(
        "ix_outbox_pending_key",
        "key",
        "id",
        sqlite_where=text("published_at IS NULL AND parked = 0"),
        postgresql_where=text("published_at IS NULL AND NOT parked"),
    ),
    Index("ix_outbox_parked", "id", sqlite_where=text("parked = 1"), postgresql_where=text("parked")),
    sqlite_autoincrement=True,
)

INBOX = Table(
    "inbox",
    METADATA,
    Column("event_id", String(ID), primary_key=True),
    Column("topic", String(255), nullable=False),
    Column("batch_id", String(ID), nullable=False),
    Column("result", String(200), nullable=False),
    Column("processed_at", UtcDateTime, nullable=False),
    Index("ix_inbox_batch_id", "batch_id"),
    # The retention purge: the oldest entries first.
    Index("ix_inbox_processed_at", "processed_at"),
)

WAITING = Table(
    "waiting",
    METADATA,
    Column("seq", ROW_ID, primary_key=True, autoincrement=True),
    Column("event_id", String(ID), nullable=False, unique=True),
    Column("topic", String(255), nullable=False),
    Column("batch_id", String(ID), nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("waits_for", String(200), nullable=False),
    Column("arrived_at", UtcDateTime, nullable=False),
    Index("ix_waiting_batch_id_seq", "batch_id", "seq"),
    Index("ix_waiting_arrived_at", "arrived_at"),
    sqlite_autoincrement=True,
)

RESULTS_BATCHES = Table(
    "results_batches",
    METADATA,
    Column("batch_id", String(ID), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("status", String(64), nullable=False),
    Column("user_id", String(ID), nullable=True),
    Column("class_id", String(ID), nullable=True),
    Column("document", JSON_DOCUMENT, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Listings by teacher or class are paged in batch id order.
    Index("ix_results_batches_user_id_batch_id", "user_id", "batch_id"),
    Index("ix_results_batches_class_id_batch_id", "class_id", "batch_id"),
    Index("ix_results_batches_status", "status"),
)

RESULTS_CLASSES = Table(
    "results_classes",
    METADATA,
    Column("class_id", String(ID), primary_key=True),
    # Sums over every batch of a class: 64-bit (migration 0007).
    Column("batch_count", COUNT, nullable=False),
    Column("essays_succeeded", COUNT, nullable=False),
    Column("essays_failed", COUNT, nullable=False),
)

RESULTS_CLASS_STATUS = Table(
    "results_class_status",
    METADATA,
    Column("class_id", String(ID), primary_key=True),
    Column("status", String(64), primary_key=True),
    Column("batches", Integer, nullable=False),
)

RESULTS_INBOX = Table(
    "results_inbox",
    METADATA,
    Column("event_id", String(ID), primary_key=True),
    Column("event_type", String(255), nullable=False),
    Column("batch_id", String(ID), nullable=False),
    Column("result", String(200), nullable=False),
    Column("processed_at", UtcDateTime, nullable=False),
    Index("ix_results_inbox_event_type_processed_at", "event_type", "processed_at"),
)
