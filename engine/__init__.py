"""Herald's engine: configuration, database, logging, lifecycle and the HTTP intake.

Everything else (``mta``, ``automation``) builds on this package; it imports neither.
"""
