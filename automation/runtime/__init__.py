"""Running workflows: programs, the interpreter, runs, guards, the core (pure)."""
