"""The suppression list: normalised addresses, the rules that decide who may be mailed (pure),
the Postgres list, its HTTP API and CLI, and the RFC 8058 one-click unsubscribe."""
