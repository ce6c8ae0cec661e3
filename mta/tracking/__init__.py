"""Open and click tracking: signed tokens and link rewriting (pure), the machine-engagement
classifier (pure), the stored links, and the public ``/t/o`` and ``/t/c`` endpoints."""
