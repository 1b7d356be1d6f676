"""Kafka plumbing: client configuration, the topics and their specs, a plain topic reader and
partition migration."""
