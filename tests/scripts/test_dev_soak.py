"""The soak's own parts (issue 17, item 4), pure where they can be: the acknowledgements split
what was lost into acknowledged (must never happen) and before acknowledgement, the peak
memory read from /proc, the store's counters read from a real database, the report's lines;
and the small disk a real tmpfs that fills to KEEP_FREE bytes and empties again."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pytest

from build_testkit import load_script

devsoak = load_script("devsoak")


def test_lost_readings_split_into_acknowledged_and_before_the_acknowledgement():
    acks = devsoak.AckLedger()
    for ack in ({"device": "pi", "run": "a1", "seq": 4}, {"device": "pi", "run": "a1", "seq": 9},
                {"device": "pi", "run": "a1", "seq": 7}, {"device": "pi", "run": "b2", "seq": 0}, {"nonsense": 1}):
        acks.add(ack)
    assert acks.highest == {"a1": 9, "b2": 0} and acks.count == 4      # an ack covers every seq up to its own
    acknowledged, before = devsoak.split_lost([("a1", 10), ("b2", 0), ("a1", 3), ("c3", 0)], acks)
    assert acknowledged == [("a1", 3), ("b2", 0)] and before == [("a1", 10), ("c3", 0)]


def test_peak_rss_is_vm_hwm_of_the_processes_in_a_components_work_folder(tmp_path):
    assert devsoak.vm_hwm_kib("Name:\tpython3\nVmPeak:\t  30000 kB\nVmHWM:\t   21344 kB\nVmRSS:\t 20000 kB\n") == 21344
    assert devsoak.vm_hwm_kib("Name:\tkthreadd\n") is None
    work = tmp_path / "work" / "io.backfill.StoreAndForward"
    work.mkdir(parents=True)
    child = subprocess.Popen(["sleep", "60"], cwd=work)
    try:
        rss = devsoak.PeakRss(tmp_path, ["io.backfill.StoreAndForward", "io.backfill.Bme680Sensor"])
        rss.sample()
        assert devsoak.component_pids(tmp_path, ["io.backfill.StoreAndForward"]) == {
            child.pid: "io.backfill.StoreAndForward"}
        assert set(rss.peak_kib) == {"io.backfill.StoreAndForward"} and rss.peak_kib["io.backfill.StoreAndForward"] > 0
        assert rss.processes == {"io.backfill.StoreAndForward": 1}
    finally:
        child.kill()
        child.wait()


def test_the_store_counters_are_read_from_its_database(tmp_path):
    db = tmp_path / "store.db"
    assert devsoak.store_counters(db) is None
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('counters', ?)", (json.dumps({"received": 12, "storage_errors": 2}),))
    assert devsoak.store_counters(db) == {"received": 12, "storage_errors": 2}


def test_the_report_lines_name_every_fault_kind_both_losses_peaks_and_counters():
    faults = devsoak.fault_tally(["kill io.backfill.Bme680Sensor", "clock step -120", "clock step 0", "disk fill",
                                  "disk free", "link down", "link up", "core restart --kill"])
    assert faults == {"SIGKILL of a component": 1, "clock stepped back": 1, "disk nearly full": 1, "link down": 1,
                      "core restart --kill": 1}
    acks = devsoak.AckLedger()
    lines = devsoak.render([], [("r", 5)], acks, {"io.backfill.StoreAndForward": 40960}, {"io.backfill.StoreAndForward": 3},
                           {"received": 10, "given_up": 1, "evicted": 0}, faults)
    text = "\n".join(lines)
    assert "lost, acknowledged      0" in text and "lost, before ack        1" in text and "given_up" in text
    assert "disk full, as the store saw it: 0 time(s)" in text and "of 1 fill(s)" in text
    assert "StoreAndForward 40.0 MiB (3 processes)" in text and "received 10, given_up 1" in text
    assert "evicted" not in text.split("store counters")[1]          # counters at 0 are not shown


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_the_small_disk_fills_to_nearly_full_and_empties_again(tmp_path):
    disk = devsoak.SmallDisk(tmp_path / "store", size_mb=2)
    disk.mount()
    try:
        assert disk.mounted()
        (disk.path / "store.db").write_bytes(b"x" * 100_000)
        disk.fill()
        free = os.statvfs(disk.path).f_bavail * os.statvfs(disk.path).f_frsize
        assert free <= devsoak.KEEP_FREE
        with pytest.raises(OSError):                      # ENOSPC: what SQLite gets as SQLITE_FULL
            (disk.path / "more").write_bytes(b"y" * (devsoak.KEEP_FREE + 4096))
        disk.free()
        assert os.statvfs(disk.path).f_bavail * os.statvfs(disk.path).f_frsize > 1_500_000
        assert (disk.path / "store.db").stat().st_size == 100_000
    finally:
        disk.unmount()
    assert not disk.mounted()


def test_the_full_disk_is_counted_from_the_stores_log_even_when_the_store_died_with_it():
    full = "WARNING store_and_forward.forwarder: could not write the database (database or disk is full); keeping"
    writable = "INFO store_and_forward.forwarder: the database is writable again."
    assert devsoak.disk_full_seen("") == 0
    assert devsoak.disk_full_seen("\n".join(["x", full, "y", writable])) == 1
    # a process logs the full disk once: a second episode shows only as "writable again"
    assert devsoak.disk_full_seen("\n".join([full, writable, writable])) == 2
    # SIGKILLed while full (no "writable again"), the next process full too, then writable
    assert devsoak.disk_full_seen("\n".join([full, full, writable])) == 2
    assert devsoak.disk_full_seen("\n".join([writable, full])) == 2
