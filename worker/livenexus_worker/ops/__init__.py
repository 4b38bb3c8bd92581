"""Running a worker: CPU sampling, Prometheus metrics and their HTTP endpoints, and tier control."""
