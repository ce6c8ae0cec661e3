"""The outbound queue: enqueue inside a caller's transaction, claims with leases,
outcomes, return paths."""
