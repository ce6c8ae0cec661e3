"""Resolving destinations: MX/A/AAAA lookups with a cache, and routing a domain to its
site."""
