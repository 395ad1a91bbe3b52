"""The recorder: stores every message it receives on some topics, with its arrival time.

    localgg cloud record --cloud DIR --topic 'dt/#' [--topic 'cmd/#' ...] --db received.db

Table `messages(id, topic, payload BLOB, qos, retain, received_at REAL epoch seconds,
received_ns INTEGER monotonic)`, one row per delivery, committed as it arrives; for tests
and the demo to count what IoT Core really got.

Every recorder connects with a client id of its own (`localgg-recorder-<pid>-<random>`),
so any number of them record the same messages side by side: with a shared client id the
broker would close one connection each time the other connects. All use the certificate
of the cloud tool `localgg-recorder`. A recorder that loses the broker says so on stderr
(`say`), reconnects by itself and says so again; what is published while it is away is
not recorded."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from . import mqtt


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)

SCHEMA = ("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB, "
          "qos INTEGER, retain INTEGER, received_at REAL NOT NULL, received_ns INTEGER NOT NULL)")


class Recorder:
    def __init__(self, cloud_dir: Path, topics: list[str], db_path: Path, name: str = "localgg-recorder",
                 say: Callable[[str], None] = _stderr) -> None:
        self.cloud_dir, self.topics, self.db_path, self.name = cloud_dir, topics, db_path, name
        self.client_id = mqtt.unique_client_id(name)
        self.connected = False
        self.disconnections = 0
        self._say = say
        self._lock = threading.Lock()
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._client = None
        self._stopping = False

    def start(self) -> "Recorder":
        self._client = mqtt.connect(self.cloud_dir, self.name, self._on_message, client_id=self.client_id,
                                    on_state=self._on_state)
        self.connected = True
        for topic in self.topics:
            mqtt.subscribe(self._client, topic, 1)
        return self

    def _on_state(self, connected: bool, reason: str) -> None:
        """Say every change of the link, once: paho may report a failed reconnection more than once."""
        if self._stopping or connected == self.connected:
            return
        self.connected = connected
        where = f"the broker of {self.cloud_dir}"
        if connected:
            self._say(f"localgg recorder {self.client_id}: reconnected to {where}; recording again")
        else:
            self.disconnections += 1
            self._say(f"localgg recorder {self.client_id}: disconnected from {where} ({reason}); messages "
                      f"published until it reconnects are not recorded; reconnecting")

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self._db.execute("INSERT INTO messages (topic, payload, qos, retain, received_at, received_ns) "
                             "VALUES (?,?,?,?,?,?)", (message.topic, message.payload, message.qos,
                                                      int(message.retain), time.time(), time.monotonic_ns()))

    def rows(self, topic_prefix: str = "") -> list[tuple[str, bytes, float]]:
        with self._lock:
            return self._db.execute("SELECT topic, payload, received_at FROM messages WHERE topic LIKE ? ORDER BY id",
                                    (topic_prefix + "%",)).fetchall()

    def stop(self) -> None:
        self._stopping = True
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None
        with self._lock:
            self._db.close()
