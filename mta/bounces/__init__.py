"""Bounces: classifying SMTP replies (pure)."""
