"""Operations: Prometheus metrics, health and readiness, logs and live quality."""
