"""Consent and privacy: consent state, confirm links, GDPR export and erase, the audit log."""
