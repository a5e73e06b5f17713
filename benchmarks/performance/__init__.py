"""Performance: speed, load and replica latency of the service."""
