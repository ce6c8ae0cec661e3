"""Run stores: Postgres for the live engine, memory for the simulator."""
