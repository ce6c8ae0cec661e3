"""Loading workflows: strict YAML, the JSON Schema, the builder, the loader, the
catalog."""
