"""The recorder: stores every message it receives on some topics, with its arrival time.

    localgg cloud record --cloud DIR --topic 'dt/#' --db received.db

Table `messages(id, topic, payload BLOB, qos, retain, received_at REAL epoch seconds,
received_ns INTEGER monotonic)`, one row per delivery, committed as it arrives; for tests
and the demo to count what IoT Core really got."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from . import mqtt

SCHEMA = ("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB, "
          "qos INTEGER, retain INTEGER, received_at REAL NOT NULL, received_ns INTEGER NOT NULL)")


class Recorder:
    def __init__(self, cloud_dir: Path, topics: list[str], db_path: Path, name: str = "localgg-recorder") -> None:
        self.cloud_dir, self.topics, self.db_path, self.name = cloud_dir, topics, db_path, name
        self._lock = threading.Lock()
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._client = None

    def start(self) -> "Recorder":
        self._client = mqtt.connect(self.cloud_dir, self.name, self._on_message)
        for topic in self.topics:
            mqtt.subscribe(self._client, topic, 1)
        return self

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
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None
        with self._lock:
            self._db.close()
