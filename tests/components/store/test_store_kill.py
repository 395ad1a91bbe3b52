"""SIGKILL at any moment loses nothing that was acknowledged: a child process stores and
acknowledges readings as fast as it can (printing each ack after its commit returns) and is
killed mid-stream; every acknowledged reading is in the database afterwards."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from backfill_common.clock import SystemClock
from store_and_forward.store import Store, StoreConfig

ROOT = Path(__file__).resolve().parents[3]
CHILD = r"""
import sys, itertools
from backfill_common.clock import SystemClock
from store_and_forward.store import Store, StoreConfig
store = Store(StoreConfig(sys.argv[1]), SystemClock())
print("ready", flush=True)
for start in itertools.count(0, 50):
    docs = [{"device": "pi", "run": "1a2b3c4d", "seq": s, "t": 1764338400000 + s, "mono": s, "clock_synced": True,
             "status": "ok", "temperature": 20.0, "temperature_raw": 22.0, "humidity": 40.0, "pressure": 1000.0,
             "gas_resistance": 1.0, "heat_stable": True, "cpu_temperature": 40.0, "correction": "cpu_factor"}
            for s in range(start, start + 50)]
    result = store.commit(docs)
    if start % 200 == 0:
        store.delete([r.id for r in store.scan(0, 20)])      # forwarding deletes too
    print("ack", result.acks[0]["seq"], flush=True)
"""


def test_acknowledged_readings_survive_sigkill(tmp_path):
    db = tmp_path / "store.db"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "components/_common"),
                                                       str(ROOT / "components/io.backfill.StoreAndForward")]))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "ready"
        last = -1
        for line in child.stdout:
            last = int(line.split()[1])
            if last >= 3000:
                break
        child.send_signal(signal.SIGKILL)        # mid-stream: it is committing the next group
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL and last >= 3000
    store = Store(StoreConfig(db), SystemClock())
    try:
        assert store.watermark("pi", "1a2b3c4d") >= last
        confirmed = store.counters["confirmed"]
        kept = {r.seq for r in store.scan(0, 10**6)}
        missing = [s for s in range(last + 1) if s not in kept]
        assert len(missing) == confirmed          # only what forwarding deleted is absent
        assert store.count == len(kept)           # the saved row count matches the table
    finally:
        store.close()
