"""Transport security: MTA-STS (RFC 8461), DANE (RFC 7672), TLS-RPT (RFC 8460), and trust."""
