"""Backfill's shared runtime: message contracts, clock, IPC adapter and settings.

Packed into every component's artifact by scripts/build.py (never copied by hand)."""
