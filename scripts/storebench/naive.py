"""The naive publisher the benchmark compares with: one PublishToIoTCore (QoS 1) per
reading, the row deleted as soon as the call returns (that is, once the nucleus has
SPOOLED it). Runs as its own component process with the real awsiot client.

    python -m storebench.naive --db backlog.db --topic dt/naive/thing/readings --seconds 20 --out result.json

Table `sensor_data(id INTEGER PRIMARY KEY, payload TEXT, processed INTEGER DEFAULT 0)` (the
rIoT blog's), oldest first. A refused publish (the spooler is full) is tried again after
0.1 s. Stops after `--seconds`, writing {"deleted", "refused", "started_ns", "ended_ns"}.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="storebench.naive")
    parser.add_argument("--db", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import QOS
    client = GreengrassCoreIPCClientV2(executor=None)
    conn = sqlite3.connect(args.db)
    deleted = refused = 0
    started = time.monotonic_ns()
    deadline = started + int(args.seconds * 1e9)
    while time.monotonic_ns() < deadline:
        row = conn.execute("SELECT id, payload FROM sensor_data ORDER BY id LIMIT 1").fetchone()
        if row is None:
            break
        try:
            client.publish_to_iot_core(topic_name=args.topic, qos=QOS.AT_LEAST_ONCE, payload=row[1].encode())
        except Exception:
            refused += 1
            time.sleep(0.1)
            continue
        conn.execute("DELETE FROM sensor_data WHERE id = ?", (row[0],))
        conn.commit()
        deleted += 1
    ended = time.monotonic_ns()
    Path(args.out).write_text(json.dumps({"deleted": deleted, "refused": refused, "started_ns": started,
                                          "ended_ns": ended}))
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
