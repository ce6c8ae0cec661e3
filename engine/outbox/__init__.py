"""Durable outbound HTTP: webhook steps and outcome webhooks go through one outbox table.

Rows are written in the transaction that causes them (a workflow step, a follower batch of the
event log); a worker delivers them later, signed per the Standard Webhooks spec, to addresses
checked once and dialled as checked, with retries, a dead-letter state and per-endpoint limits.
"""
