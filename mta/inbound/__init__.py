"""Inbound SMTP: the server for Herald's bounce domain (DSNs, feedback-loop reports, mailto
unsubscribes), the stored copies, and their processing into suppressions and events."""
