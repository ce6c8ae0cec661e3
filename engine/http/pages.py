"""Small HTML pages for people following links from mail (unsubscribe, consent): no scripts,
no cookies, no referrer, nothing cached."""

from __future__ import annotations

import html

from starlette.responses import HTMLResponse, Response

HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                      "form-action 'self'",
           "Referrer-Policy": "no-referrer"}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport"
content="width=device-width,initial-scale=1"><title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.5rem 1rem}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def page(status: int, title: str, body: str) -> Response:
    """``body`` is HTML: escape what it quotes."""
    return HTMLResponse(PAGE.format(title=html.escape(title), body=body), status_code=status,
                        headers=HEADERS)
