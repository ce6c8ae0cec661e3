"""Traffic shaping: per-site rules and token buckets (pure), and the per-site ready
queues."""
