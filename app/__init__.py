"""liverank: a streaming real-time personalization consumer (Kafka, Faust, RocksDB, ONNX)."""
