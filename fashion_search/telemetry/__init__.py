"""What the roles report while they run: Prometheus metrics, OpenTelemetry traces, JSON logs."""
