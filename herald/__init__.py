"""Herald's composition root: the CLI and the app factory that wire engine, mta and automation."""
