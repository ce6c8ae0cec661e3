"""Message content: templates, recommendations, unsubscribe links."""
