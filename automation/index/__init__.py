"""The in-memory trigger index: its watchers, per-contact state and timers (pure)."""
