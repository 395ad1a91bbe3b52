"""The main job's live view (issue 13, item 2): `render` draws a State (pure, checked as text
through rich's own console), the View counts distinct (run, seq) so a resend is not loss and
turns changes into events, the poller reads the store's and the recorder's real SQLite files,
and the whole view is looked at through tmux, as a user sees it in a terminal."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from build_testkit import load_script
from conftest import short_tmp, wait_for
from test_dev_run import left_behind
from store_and_forward import packer
from localgg.cloud import shadow_client

devview = load_script("devview")
load_script("devreport")
REPO = Path(__file__).resolve().parents[2]


def text_of(renderable) -> str:
    from rich.console import Console
    console = Console(file=io.StringIO(), width=140, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def reading(seq, run="r1", **extra):
    return {"run": run, "seq": seq, "status": "ok", "temperature": 21.5, "temperature_raw": 27.25,
            "cpu_temperature": 48.0, **extra}


def test_a_resend_is_a_copy_not_a_new_reading_and_the_newest_is_shown_raw_beside_corrected():
    view = devview.View(clock=lambda: 1_800_000_000.0)
    for seq in (0, 1, 1, 2):
        view.reading(reading(seq))
    assert (view.state.produced, view.state.copies) == (3, 4)
    text = text_of(view)
    assert "3 readings on local pub/sub (1 resent copies)" in text
    assert "run r1 seq 2: raw 27.25 C -> corrected 21.50 C (cpu 48.0 C)" in text


def test_link_changes_evictions_and_notes_become_events():
    view = devview.View(clock=lambda: 1_800_000_000.0)
    view.update(online=True, counters={"evicted": 0})
    view.update(online=False, link="down")
    view.update(counters={"evicted": 5})
    view.update(online=True, link="up")
    view.event("    -- the core went away (restarted or killed): following again once it is back")
    texts = [text for _, text in view.state.events]
    assert texts == ["IoT Core connection lost (offline)", "the store evicted 5 reading(s)",
                     "IoT Core connection back online",
                     "the core went away (restarted or killed): following again once it is back"]
    shown = text_of(view)
    assert "online (link up)" in shown and "the store evicted 5 reading(s)" in shown


def test_render_shows_the_stores_counters_the_cloud_and_the_shadow():
    state = devview.State(produced=120, copies=120, backlog=40, counters={"stored": 120, "sent": 90,
                          "confirmed": 80, "evicted": 0}, cloud=80, cloud_copies=83, online=False,
                          link="down", spooled=2, shadow={"link": "offline", "backlog": {"count": 35}},
                          shadow_at=1_800_000_000.0, refused={"sampling.interval_s": "must be 0.1..3600"})
    text = text_of(devview.render(state, now=1_800_000_012.0))
    for expected in ("120 by the store, 40 waiting in its backlog", "90 sent, 80 confirmed, 0 evicted",
                     "80 distinct readings at IoT Core (3 duplicate copies)", "offline (link down, 2 message(s)",
                     "(12 s ago): backlog 35, link offline",
                     "sampling.interval_s: must be 0.1..3600"):
        assert expected in text, (expected, text)
    assert devview.plain(state).startswith("    -- produced 120, backlog 40, sent 90, confirmed 80, in the cloud 80")
    state.counters["live"] = 7
    assert "40 waiting in its backlog (7 confirmed from memory, never stored)" in text_of(
        devview.render(state, now=1_800_000_012.0))


def test_the_shadows_metadata_says_when_the_store_last_reported():
    metadata = {"link": {"timestamp": 5}, "backlog": {"count": {"timestamp": 9}, "bytes": {"timestamp": 7}}}
    assert shadow_client.newest(metadata) == 9 and shadow_client.newest(None) is None


def test_the_store_and_the_recorder_are_read_from_their_sqlite_files(tmp_path):
    store = tmp_path.joinpath(*devview.STORE_DB)
    store.parent.mkdir(parents=True)
    with sqlite3.connect(store) as conn:
        conn.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO readings (body) VALUES (?)", [("{}",)] * 7)
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('counters', ?)", (json.dumps({"stored": 9, "sent": 2}),))
    assert devview.store_state(tmp_path) == (7, {"stored": 9, "sent": 2})
    assert devview.store_state(tmp_path / "none") == (None, {})

    db = tmp_path / "received.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, topic TEXT, payload BLOB, received_at REAL)")
    count = devview.CloudCount(db)
    t0 = 1_800_000_000_000
    batch = packer.pack("pi", [{**reading(s), "t": t0 + s, "mono": s} for s in range(4)])[0].payload
    for _ in range(2):                                       # the same batch twice: a duplicate
        with sqlite3.connect(db) as conn:
            conn.execute("INSERT INTO messages (topic, payload, received_at) VALUES ('dt/backfill/pi/readings', ?, 0)",
                         (batch,))
        seen = count.poll()
    assert seen == (4, 8) and count.poll() == (4, 8)           # read once: rows after the last id only


def test_the_live_view_in_a_terminal_as_a_user_sees_it():
    state = short_tmp("bfv-") / "state"
    session = f"bfv{int(time.time() * 1000) % 10**8}"
    command = f"{sys.executable} {REPO / 'scripts' / 'dev.py'} run --seconds 45 --state {state}; echo RUN-ENDED; sleep 600"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "45", command], check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
    try:
        def counted():
            text = screen()
            found = re.search(r"([0-9][0-9,]*) distinct readings at IoT Core", text)
            return found and int(found.group(1).replace(",", "")) >= 3 and text
        text = wait_for(counted, 300, interval=0.5, message="the live view with readings in the cloud")
        for row in ("produced", "stored", "sent", "in the cloud", "link", "newest", "cloud shadow", "events"):
            assert any(line.lstrip(" │|┃").startswith(row) for line in text.splitlines()), (row, text)
        assert "online" in text and "raw " in text and "-> corrected" in text, text
        assert not [line for line in text.splitlines() if line.lstrip().startswith("run ")]   # no scrolling lines
        done = wait_for(lambda: "RUN-ENDED" in screen() and screen(), 200, interval=0.5,
                        message="--seconds to end the run")
        assert "IoT Core has received" in done and "stopping the core and the cloud" in done
        def ours() -> list[str]:       # but tmux and the pane's shell, which carry the command line
            return [p for p in left_behind(state) if "RUN-ENDED" not in p]
        wait_for(lambda: not ours(), 30, interval=0.2, message=f"no process left: {ours()}")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
