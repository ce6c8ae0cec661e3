"""The durable event intake: request validation (pure) and the group-commit writer (I/O)."""
