"""io.backfill.StoreAndForward: every corrected reading persisted in SQLite, forwarded to
AWS IoT Core in batches sized to its limits, deleted only once IoT Core has it.

Pure parts: packer (batch format v1), ledger (confirmation and rate plan), watermark
(acknowledgements), retime (clock steps). I/O: store (SQLite), forwarder (the loop's
logic over a small port), runner (wiring to Greengrass IPC), __main__ (entry point)."""
