"""Where an event came from (the event log's ``source`` column), and how far it is trusted.

``api`` events come from a secret key (the sender's backend); ``pixel`` events from a browser,
about a contact the backend vouched for with a contact token; ``pixel_anonymous`` events from a
browser that named no one (the contact ``anon:<id>``). Browser-sourced events only fire the
workflow triggers that accept them, and anonymous ones fire none.
"""

from __future__ import annotations

API = "api"
PIXEL = "pixel"
PIXEL_ANONYMOUS = "pixel_anonymous"
BROWSER_SOURCES = frozenset({PIXEL, PIXEL_ANONYMOUS})
ANONYMOUS_SOURCES = frozenset({PIXEL_ANONYMOUS})
