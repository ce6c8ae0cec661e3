"""Tools over the core: simulate and explain."""
