"""The pure core: events and records, their codec, user state and attribution, the catalog,
features, retrieval, ranking and the batch processor. State in, state out; nothing here imports
Faust, a Kafka client or the rest of ``app`` (import-linter contracts in pyproject.toml)."""
