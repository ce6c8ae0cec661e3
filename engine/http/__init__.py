"""The HTTP app: error bodies, authentication, rate limits, metrics and the engine's routes."""
