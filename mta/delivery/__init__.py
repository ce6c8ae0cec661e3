"""Delivery: the service that claims and records, and one attempt across a
destination's hosts."""
