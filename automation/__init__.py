"""Herald's automation core: triggers over the event log, durable workflows, templates.

``automation`` may import ``mta``'s public enqueue API and ``engine``; nothing imports it but
the composition root (``herald``).
"""
