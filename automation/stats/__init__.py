"""Funnels, attribution and A/B results: counters kept incrementally from the logs."""
