"""The workflow model: definitions, triggers, conditions, filters, durations (pure)."""
