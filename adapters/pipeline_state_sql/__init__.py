"""SQLAlchemy 2 (async) adapter: durable state, history, transition log, outbox and inbox."""
