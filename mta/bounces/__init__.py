"""Bounces (pure): classifying SMTP replies, and parsing returned messages (DSNs, plain-text
bounces, ARF complaints, auto-replies) with ``mta.bounces.parse.parse_report``."""
