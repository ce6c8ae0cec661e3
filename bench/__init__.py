"""Load tests that size the hardware: ``herald bench intake|mta|dkim|automation``.

Each module exposes ``main(argv: list[str]) -> int`` and prints its result as a final JSON line.
"""
