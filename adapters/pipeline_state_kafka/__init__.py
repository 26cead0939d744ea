"""Kafka adapter (aiokafka): consumer, outbox relay transport and the runnable service."""
