"""Herald's MTA: durable outbound queue, DNS, DKIM, pooled SMTP delivery, shaping and retries.

``mta`` builds on ``engine`` and never imports ``automation``.
"""
