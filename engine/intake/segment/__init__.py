"""The Segment tracking API dialect: ``/v1/batch``, ``/v1/track``, ... as Herald events."""
