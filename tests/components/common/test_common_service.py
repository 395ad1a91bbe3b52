"""serve(): SIGTERM stops a component at once, whatever its main thread is doing. The
handler used to call queue.Queue.put, which is not reentrant: a signal that arrived while the
main thread was inside the inbox's own put or get deadlocked the process until Greengrass's
SIGKILL 5 s later (what a stop had not yet closed was then lost). Real processes, real signals."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

CHILD = r'''
import sys
from backfill_common import service
from backfill_common.ipc import Inbox, Message

class NoIpc:                      # serve() needs only close() from its IPC adapter here
    def close(self):
        pass

service.Ipc = NoIpc

class Busy:
    """A loop that lives inside the inbox: put and get, as fast as it can."""
    def __init__(self, ipc):
        self.inbox = Inbox()
    def start(self):
        print("ready", flush=True)
    def run(self, stop):
        while not stop.is_set():
            self.inbox.put(Message("x", "", {}))
            self.inbox.get(timeout=0)
    def close(self):
        print("closed", flush=True)

sys.exit(service.serve(Busy))
'''


def test_sigterm_stops_a_process_whose_loop_is_inside_its_inbox():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "components" / "_common"))
    children = [subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, env=env)
                for _ in range(6)]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in children:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
            assert child.returncode == 0
            assert child.stdout.read().strip().endswith("closed")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
