"""Where an event came from (the event log's ``source`` column), and how far it is trusted.

``api`` events come from a secret key (the sender's backend); ``pixel`` events from a browser,
about a contact the backend vouched for with a contact token; ``pixel_anonymous`` events from a
browser that named no one (the contact ``anon:<id>``). Browser-sourced events only fire the
workflow triggers that accept them, and anonymous ones fire none.

``segment`` events come through the Segment dialect (a secret write key, so trusted like
``api``); ``segment_anonymous`` ones named only an ``anonymousId`` no contact is linked to yet
(stored under ``anon:<id>``, firing nothing). When an anonymous id is joined to a contact, its
``anon:<id>`` events are copied to the contact with the identified source of
:data:`IDENTIFIED_SOURCE`.
"""

from __future__ import annotations

API = "api"
PIXEL = "pixel"
PIXEL_ANONYMOUS = "pixel_anonymous"
SEGMENT = "segment"
SEGMENT_ANONYMOUS = "segment_anonymous"
BROWSER_SOURCES = frozenset({PIXEL, PIXEL_ANONYMOUS})
ANONYMOUS_SOURCES = frozenset({PIXEL_ANONYMOUS, SEGMENT_ANONYMOUS})
# The source of an event stored under 'anon:<id>' because no contact was linked yet ...
ANONYMOUS_SOURCE = {SEGMENT: SEGMENT_ANONYMOUS}
# ... and of its copy once the anonymous id is joined to a contact.
IDENTIFIED_SOURCE = {PIXEL_ANONYMOUS: PIXEL, SEGMENT_ANONYMOUS: SEGMENT}
