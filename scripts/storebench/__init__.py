"""The store's benchmark (issue 7, "How fast, how small"): a command, not a test.

    scripts/bench store [--quick]          # or: python -m storebench --help (PYTHONPATH: see scripts/bench)

Parts: drain (a day's backlog to IoT Core through localgg and mosquitto, beside a naive
publisher), ingest (the store's validation and group commit beside a per-row-commit
baseline), footprint (RSS and CPU of the store process at 1 Hz). Every figure is
measured in the same run and printed as one table with its aim.
"""
