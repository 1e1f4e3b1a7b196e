"""The operator page: a client of the daemon's gRPC API, served on its own port (placeholder)."""
