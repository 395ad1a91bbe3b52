"""The main job's live view (`python3 scripts/dev.py run` in a terminal), drawn with rich.

    view = View()                          # what is shown: a plain State, updated from threads
    poller = Poller(view, root, cloud, received_db, python, env); poller.start()
    with rich.live.Live(view, refresh_per_second=2): follower.run()

The counts are of distinct (run, seq), so a resend never looks like loss: produced (seen on
the device's local pub/sub), stored and waiting in the store's SQLite (its own counters,
read-only), and received by IoT Core (the cloud recorder). Beside them: the link as the
core sees it, the newest reading raw beside corrected, the cloud shadow's view of the
store, and the last events (link down/up, the core gone and back, a scenario's faults,
evictions, a refused setting). `render` is pure: a State in, a rich Table out.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

STORE_DB = ("work", "io.backfill.StoreAndForward", "store.db")


@dataclass
class State:
    produced: int = 0                     # distinct (run, seq) on local pub/sub
    copies: int = 0                       # copies of them (a resend is a copy)
    backlog: Optional[int] = None         # rows in the store
    counters: dict = field(default_factory=dict)   # the store's own (stored, sent, confirmed, evicted, ...)
    cloud: int = 0                        # distinct (run, seq) IoT Core received
    cloud_copies: int = 0
    online: Optional[bool] = None         # the core's IoT Core connection
    link: str = "?"                       # the link as localgg's fault has it
    spooled: Optional[int] = None         # messages in the core's spool
    newest: Optional[dict] = None
    shadow: Optional[dict] = None         # reported.store in the cloud shadow
    shadow_at: Optional[float] = None     # when the store last reported it (the shadow's metadata)
    refused: dict = field(default_factory=dict)
    events: deque = field(default_factory=lambda: deque(maxlen=8))   # (epoch seconds, text)


def _count(value: Optional[int]) -> str:
    return "-" if value is None else f"{value:,}"


def render(state: State, now: float, title: str = "Backfill, live"):
    """The view of a State as a rich Table (pure)."""
    from rich.table import Table
    table = Table(title=title, show_header=False, expand=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    c = state.counters
    table.add_row("produced", f"{state.produced:,} readings on local pub/sub"
                  + (f" ({state.copies - state.produced:,} resent copies)" if state.copies > state.produced else ""))
    table.add_row("stored", f"{_count(c.get('stored'))} by the store, {_count(state.backlog)} waiting in its backlog"
                  + (f" ({_count(c.get('live'))} confirmed from memory, never stored)" if c.get("live") else ""))
    table.add_row("sent", f"{_count(c.get('sent'))} sent, {_count(c.get('confirmed'))} confirmed, "
                          f"{_count(c.get('evicted'))} evicted (the store's counters)")
    table.add_row("in the cloud", f"{state.cloud:,} distinct readings at IoT Core"
                  + (f" ({state.cloud_copies - state.cloud:,} duplicate copies)" if state.cloud_copies > state.cloud
                     else ""))
    link = {True: "[green]online[/green]", False: "[red]offline[/red]", None: "?"}[state.online]
    spool = "" if state.spooled is None else f", {state.spooled} message(s) in the core's spool"
    table.add_row("link", f"{link} (link {state.link}{spool})")
    reading = state.newest
    if reading and reading.get("status") == "ok":
        table.add_row("newest", f"run {str(reading['run'])[:8]} seq {int(reading['seq'])}: raw {reading['temperature_raw']:.2f} C"
                                f" -> corrected {reading['temperature']:.2f} C (cpu {reading['cpu_temperature']:.1f} C)")
    elif reading:
        table.add_row("newest", f"run {str(reading['run'])[:8]} seq {int(reading['seq'])}: status {reading.get('status')}")
    else:
        table.add_row("newest", "waiting for the first reading")
    if state.shadow is not None:
        backlog = (state.shadow.get("backlog") or {})
        rows = backlog.get("count") if isinstance(backlog, dict) else backlog
        when = "" if state.shadow_at is None else (
            f" at {time.strftime('%H:%M:%S', time.localtime(state.shadow_at))} ({now - state.shadow_at:.0f} s ago)")
        table.add_row("cloud shadow", f"reported.store{when}: backlog {_count(rows)}, link "
                                      f"{state.shadow.get('link', '?')}")
    else:
        table.add_row("cloud shadow", "no reported.store yet (the store reports every shadow_interval_s)")
    if state.refused:
        table.add_row("refused", "; ".join(f"{k}: {v}" for k, v in sorted(state.refused.items()))[:200])
    events = [f"{time.strftime('%H:%M:%S', time.localtime(at))}  {text}" for at, text in list(state.events)]
    table.add_row("events", "\n".join(events) if events else "none yet")
    return table


def plain(state: State) -> str:
    """One line for a terminal that is not one (CI, a pipe)."""
    c = state.counters
    return (f"    -- produced {state.produced}, backlog {_count(state.backlog)}, sent {_count(c.get('sent'))}, "
            f"confirmed {_count(c.get('confirmed'))}, in the cloud {state.cloud}, "
            f"link {'online' if state.online else 'offline' if state.online is False else '?'}")


class View:
    """The state shown, fed from the follower's and the poller's threads; rich draws it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.state, self.clock, self.lock = State(), clock, threading.Lock()
        self.seen: set = set()

    def event(self, text: str) -> None:
        with self.lock:
            self.state.events.append((self.clock(), text.strip().lstrip("-").strip()))

    def reading(self, reading: dict) -> None:
        key = (str(reading.get("run")), reading.get("seq"))
        with self.lock:
            self.state.copies += 1
            if key not in self.seen:
                self.seen.add(key)
                self.state.produced = len(self.seen)
                self.state.newest = reading

    def update(self, **values) -> None:
        with self.lock:
            before = self.state.online
            evicted = self.state.counters.get("evicted")
            for key, value in values.items():
                setattr(self.state, key, value)
            if "online" in values and before is not None and values["online"] != before:
                self.state.events.append((self.clock(), "IoT Core connection " +
                                          ("back online" if values["online"] else "lost (offline)")))
            now_evicted = self.state.counters.get("evicted")
            if evicted is not None and now_evicted and now_evicted > evicted:
                self.state.events.append((self.clock(), f"the store evicted {now_evicted - evicted} reading(s)"))

    def __rich__(self):
        with self.lock:
            return render(self.state, self.clock())


class CloudCount:
    """Distinct (run, seq) in the recorder's database, read incrementally (rows after the last id)."""

    def __init__(self, db: Path, since: float = 0.0) -> None:
        self.db, self.since, self.last_id, self.keys, self.copies = db, since, 0, set(), 0

    def poll(self) -> tuple[int, int]:
        import devreport
        if not self.db.exists():
            return 0, 0
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute("SELECT id, payload FROM messages WHERE id > ? AND topic LIKE 'dt/backfill/%/readings' "
                                "ORDER BY id", (self.last_id,)).fetchall()
        for row_id, payload in rows:
            self.last_id = row_id
            for reading in devreport.batch_readings(payload):
                if reading.get("t", 0) / 1000 >= self.since:
                    self.keys.add((str(reading["run"]), int(reading["seq"])))
                    self.copies += 1
        return len(self.keys), self.copies


def store_state(root: Path) -> tuple[Optional[int], dict]:
    """(rows in the store's backlog, its counters), read-only; (None, {}) before it exists."""
    path = root.joinpath(*STORE_DB)
    if not path.exists():
        return None, {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2) as conn:
            backlog = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            row = conn.execute("SELECT value FROM meta WHERE key = 'counters'").fetchone()
        return backlog, (json.loads(row[0]) if row else {})
    except (sqlite3.Error, ValueError):
        return None, {}


class Poller(threading.Thread):
    """Every second: the store's database and the recorder; every 2 s the core's status; every
    15 s the cloud shadow. Failures (a core restarting) leave the last values shown."""

    def __init__(self, view: View, root: Path, cloud: Path, received_db: Path, python: str, env: dict,
                 thing: str = "backfill-dev", since: float = 0.0) -> None:
        super().__init__(daemon=True, name="view-poller")
        self.view, self.root, self.cloud, self.python, self.env, self.thing = view, root, cloud, python, env, thing
        self.count = CloudCount(received_db, since)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        tick = 0
        while not self._stop.wait(1.0):
            backlog, counters = store_state(self.root)
            cloud, copies = self.count.poll()
            self.view.update(backlog=backlog, counters=counters or self.view.state.counters,
                             cloud=cloud, cloud_copies=copies)
            if tick % 2 == 0:
                self._core_status()
            if tick % 15 == 0:
                self._shadow()
            tick += 1

    def _core_status(self) -> None:
        try:
            result = subprocess.run([self.python, "-m", "localgg", "status", "--root", str(self.root)],
                                    env=self.env, capture_output=True, text=True, timeout=10)
            iotcore = json.loads(result.stdout).get("iotcore") or {} if result.returncode == 0 else None
        except (subprocess.SubprocessError, ValueError, OSError):
            iotcore = None
        if iotcore is None:
            return
        link = iotcore.get("link") or {}
        text = "up" if link.get("up") else "down"
        if link.get("bandwidth") or link.get("latency"):
            text += f", limited to {link.get('bandwidth') or '-'} B/s and {1000 * (link.get('latency') or 0):g} ms"
        self.view.update(online=bool(iotcore.get("online")), link=text,
                         spooled=(iotcore.get("spool") or {}).get("messages"))

    def _shadow(self) -> None:
        try:
            from localgg.cloud import shadow_client
            ok, doc = shadow_client.request(self.cloud, self.thing, "backfill", "get", timeout=5)
        except (OSError, TimeoutError, ValueError):
            return
        reported = ((doc.get("state") or {}).get("reported") or {}) if ok else {}
        refused = {}                         # reported.refused.<section>: {key: reason}
        sections = reported.get("refused") if isinstance(reported.get("refused"), dict) else {}
        for section, keys in sections.items():
            for key, reason in (keys.items() if isinstance(keys, dict) else ()):
                refused[f"{section}.{key}"] = reason
        new = sorted(set(refused) - set(self.view.state.refused))
        store = reported.get("store") if isinstance(reported.get("store"), dict) else None
        stamps = shadow_client.newest(((doc.get("metadata") or {}).get("reported") or {}).get("store")) if ok else None
        self.view.update(shadow=store, shadow_at=stamps, refused=refused)
        for key in new:
            self.view.event(f"refused setting {key}: {refused[key]}")
