"""The Python client of rover-safety (placeholder until the client library lands)."""
