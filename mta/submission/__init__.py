"""SMTP submission (RFC 6409): authenticated mailers hand Herald messages on 587 (STARTTLS)
and 465 (implicit TLS); each recipient becomes one queued message, exactly as from
``POST /v1/messages``."""
