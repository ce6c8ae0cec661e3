"""The SMTP client: reply parsing (pure), session types, connecting, sessions and pools."""
