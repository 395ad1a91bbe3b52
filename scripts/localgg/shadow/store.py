"""ShadowManager's database: `<root>/work/aws.greengrass.ShadowManager/shadow.db`.

Tables as the real one's (an H2 file there; SQLite here): `documents` with a soft
delete (a re-created local shadow starts again at version 1) and `sync`, one row per
synchronized shadow. The classic shadow has the name "". One connection, autocommit.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .document import Shadow
from .sync import SyncRecord


class ShadowStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS documents (thingName TEXT NOT NULL, shadowName TEXT NOT NULL, "
                         "document TEXT, version INTEGER NOT NULL DEFAULT 1, deleted INTEGER NOT NULL DEFAULT 0, "
                         "updateTime INTEGER, PRIMARY KEY (thingName, shadowName))")
        self._db.execute("CREATE TABLE IF NOT EXISTS sync (thingName TEXT NOT NULL, shadowName TEXT NOT NULL, "
                         "lastSyncedDocument TEXT, localVersion INTEGER NOT NULL DEFAULT 0, cloudVersion INTEGER NOT "
                         "NULL DEFAULT 0, lastSyncTime INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (thingName, shadowName))")

    def get(self, thing: str, name: str) -> Shadow | None:
        row = self._db.execute("SELECT document, version FROM documents WHERE thingName=? AND shadowName=? "
                               "AND deleted=0", (thing, name)).fetchone()
        if row is None:
            return None
        document = json.loads(row[0])
        return Shadow(document.get("state", {}), document.get("metadata", {}), row[1])

    def put(self, thing: str, name: str, shadow: Shadow, now: int) -> None:
        document = json.dumps({"state": shadow.state, "metadata": shadow.metadata}, separators=(",", ":"))
        self._db.execute("INSERT OR REPLACE INTO documents (thingName, shadowName, document, version, deleted, "
                         "updateTime) VALUES (?,?,?,?,0,?)", (thing, name, document, shadow.version, now))

    def delete(self, thing: str, name: str, tombstone_version: int, now: int) -> None:
        self._db.execute("UPDATE documents SET deleted=1, document=NULL, version=?, updateTime=? "
                         "WHERE thingName=? AND shadowName=?", (tombstone_version, now, thing, name))

    def named_shadows(self, thing: str, limit: int, offset: int) -> list[str]:
        rows = self._db.execute("SELECT shadowName FROM documents WHERE deleted=0 AND thingName=? AND shadowName!='' "
                                "ORDER BY shadowName LIMIT ? OFFSET ?", (thing, limit, offset)).fetchall()
        return [r[0] for r in rows]

    def sync_record(self, thing: str, name: str) -> SyncRecord:
        row = self._db.execute("SELECT lastSyncedDocument, localVersion, cloudVersion, lastSyncTime FROM sync "
                               "WHERE thingName=? AND shadowName=?", (thing, name)).fetchone()
        if row is None:
            return SyncRecord()
        return SyncRecord(json.loads(row[0]) if row[0] else None, row[1], row[2], row[3])

    def save_sync(self, thing: str, name: str, record: SyncRecord) -> None:
        self._db.execute("INSERT OR REPLACE INTO sync VALUES (?,?,?,?,?,?)",
                         (thing, name, json.dumps(record.last_synced) if record.last_synced is not None else None,
                          record.local_version, record.cloud_version, record.last_sync_time))

    def close(self) -> None:
        self._db.close()
