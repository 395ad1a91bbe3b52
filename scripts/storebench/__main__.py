"""The store's benchmark: drain, ingest, footprint; one table, every ratio from this run.

    python -m storebench [--parts drain,ingest,footprint] [--quick | --smoke] [--readings N] ...

(scripts/bench store runs this with the project's venv and PYTHONPATH.)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .figures import Aim, Row, ceiling, render

PARTS = ("ingest", "footprint", "drain", "slow-link", "flood", "startup")
DAY = 86_400
STORE_PUBLISHES_PER_S = 20          # the store's default max_publishes_per_s (config-store)
STORE_BYTES_PER_S = 450_560          # the store's default max_bytes_per_s (config-store)
MODES = {  # readings, naive_seconds, footprint_seconds, ingest_readings, baseline_seconds, flood_seconds, startup
    "full": (DAY, 20.0, 60.0, 50_000, 5.0, 60.0, 1_000_000),
    "quick": (DAY, 5.0, 10.0, 10_000, 2.0, 20.0, 1_000_000),
    "smoke": (2_000, 2.0, 3.0, 1_000, 0.5, 3.0, 5_000),
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench store", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""parts:
  drain      a backlog (a day at 1 Hz: 86,400 readings) from the store to the cloud through localgg and
             mosquitto (IoT Core's quotas), until `localgg cloud record` has every reading; beside a naive
             publisher (one PublishToIoTCore per reading, deleted on return) run for --naive-seconds and
             extrapolated
  ingest     readings/s validated and durably stored by the store's code (Forwarder + Store), beside a
             per-row-commit baseline (the rIoT blog's: a connection and a commit per reading)
  footprint  RSS and CPU of the store process at 1 Hz, online, for --footprint-seconds
  slow-link  the same backlog through localgg's link limited to 1 Mbit/s and 100 ms each way (a phone
             hotspot for a minute or two): seconds to drain and the share of the link it used
  startup    seconds from launching the store with --startup-readings stored (default 1,000,000) to its
             first batch recorded in the cloud (a DiskSpooler user waits minutes at boot)
  flood      the store process's RSS while 2,000 messages/s arrive on backfill/readings/corrected for
             --flood-seconds (the fault trial's flood: 41 -> 246 MB before the inbox was bounded)""")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of: " + ", ".join(PARTS))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="footprint over 10 s, naive 5 s, fewer ingest readings")
    mode.add_argument("--smoke", action="store_true", help="the smallest run (2,000-reading drain, seconds-long "
                      "parts): checks that everything runs; its figures say little")
    parser.add_argument("--readings", type=int, help="drain backlog size (default 86,400)")
    parser.add_argument("--naive-seconds", type=float, help="how long the naive publisher runs (default 20)")
    parser.add_argument("--footprint-seconds", type=float, help="footprint window (default 60; --quick: 10)")
    parser.add_argument("--ingest-readings", type=int, help="readings the store ingests (default 50,000)")
    parser.add_argument("--flood-seconds", type=float, help="how long the flood lasts (default 60; --quick: 20)")
    parser.add_argument("--startup-readings", type=int, help="startup: the backlog stored (default 1,000,000)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, databases)")
    args = parser.parse_args(argv)
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    defaults = MODES[args.mode]
    args.readings = args.readings or defaults[0]
    args.naive_seconds = args.naive_seconds or defaults[1]
    args.footprint_seconds = args.footprint_seconds or defaults[2]
    args.ingest_readings = args.ingest_readings or defaults[3]
    args.baseline_seconds = defaults[4]
    args.flood_seconds = args.flood_seconds or defaults[5]
    args.startup_readings = args.startup_readings or defaults[6]
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; parts: {', '.join(PARTS)}")
    return args


def mosquitto_version() -> str:
    from localgg.cloud.broker import find_mosquitto
    path = find_mosquitto()
    if not path:
        return "none"
    out = subprocess.run([path, "-h"], capture_output=True, text=True).stdout.splitlines()
    return out[0].replace("mosquitto version ", "").strip() if out else "?"


def ingest_rows(args, base: Path, thing: str, notes: list[str]) -> list[Row]:
    from .ingest import ingest_ack_queue, ingest_per_row, ingest_store
    from .readings import daily
    readings = list(daily(args.ingest_readings, device=thing, run="1a2b3c4d", t0_ms=time.time_ns() // 10**6))
    normal = ingest_store(base / "ingest-normal", readings, thing, "NORMAL")
    full = ingest_store(base / "ingest-full", readings, thing, "FULL")
    riot = ingest_per_row(base / "ingest-riot", readings, args.baseline_seconds)
    queue = ingest_ack_queue(base / "ingest-ackqueue", readings, args.baseline_seconds)
    notes.append(f"ingest: ours = Forwarder.on_reading (schema check) + group commits (commit_every 500) of "
                 f"{normal.readings:,} readings, {normal.acks} acknowledgements; baseline = a connection, an "
                 f"INSERT and a commit per reading (Python sqlite3 defaults: rollback journal, synchronous FULL), "
                 f"{riot.readings:,} readings in {riot.seconds:.1f} s; persist-queue's SQLiteAckQueue (defaults: a "
                 f"commit per put) {queue.readings:,} readings in {queue.seconds:.1f} s; same disk")
    return [Row("ingest", "readings/s stored (WAL, synchronous FULL: default)", full.rate, riot.rate,
                full.rate / riot.rate, Aim(">=", 20, "x"), aim_on_ratio=True),
            Row("ingest", "readings/s stored (WAL, synchronous NORMAL)", normal.rate, riot.rate,
                normal.rate / riot.rate, Aim(">=", 20, "x"), aim_on_ratio=True),
            Row("ingest", "readings/s stored, ours (FULL) vs persist-queue SQLiteAckQueue", full.rate, queue.rate,
                full.rate / queue.rate, None)]


def footprint_rows(args, lc, witness, base: Path, notes: list[str]) -> list[Row]:
    from .footprint import footprint
    result = footprint(lc, witness, base / "footprint", args.footprint_seconds)
    notes.append(f"footprint: the store process (python -m store_and_forward, real awsiot client, ShadowManager "
                 f"deployed) at 1 Hz over {result.seconds:.0f} s once online (start-up excluded); "
                 f"{result.published} readings published, {result.in_cloud} confirmed in the cloud; "
                 f"mean RSS {result.rss_mb_mean:.1f} MB; writes from /proc/<pid>/io over the window's "
                 f"{result.window_readings} readings (write_bytes: pages dirtied for the storage layer, SQLite's WAL, "
                 f"checkpoints and the store's commits; the SD card's wear; --footprint-seconds 600 for 10 minutes)")
    return [Row("footprint", f"RSS, MB (max over {result.seconds:.0f} s at 1 Hz)", result.rss_mb_max,
                aim=Aim("<", 60, " MB")),
            Row("footprint", "CPU, % of a core (user + system)", result.cpu_percent, aim=Aim("<", 2, " %")),
            Row("footprint", "bytes written to storage per reading (write_bytes)", result.per_reading("write_bytes"),
                aim=Aim("<", 2048, " B")),
            Row("footprint", "bytes through write() per reading (wchar)", result.per_reading("wchar"))]


SLOW_BANDWIDTH, SLOW_LATENCY_S = 125_000, 0.1      # 1 Mbit/s, 100 ms each way


def slow_link_rows(args, lc, witness, base: Path, notes: list[str]) -> list[Row]:
    from .drain import slow_drain
    from .readings import daily
    n = args.readings
    t0 = time.time_ns() // 10**6 - n * 1000
    result = slow_drain(lc, witness, base / "slow-link", list(daily(n, device=lc.thing, run="51011e00", t0_ms=t0)),
                        SLOW_BANDWIDTH, SLOW_LATENCY_S)
    used = 100 * result.wire_bytes / (result.seconds * SLOW_BANDWIDTH)
    notes.append(f"slow-link: {n:,} readings through localgg's link at {SLOW_BANDWIDTH * 8 / 1e6:g} Mbit/s and "
                 f"{SLOW_LATENCY_S * 1000:.0f} ms each way: {result.batches} batches, {result.wire_bytes / 1e6:.2f} MB "
                 f"of MQTT topic + payload (TLS and MQTT framing on top are not counted in the share); the fastest "
                 f"possible drain is {result.wire_bytes / SLOW_BANDWIDTH:.0f} s")
    return [Row("slow-link", f"seconds to drain {n:,} at 1 Mbit/s, 100 ms", result.seconds, aim=Aim("<", 60, " s")),
            Row("slow-link", "% of the link's bandwidth used", used, aim=Aim(">=", 80, " %"))]


def startup_rows(args, lc, witness, base: Path, notes: list[str]) -> list[Row]:
    from .drain import spool_emptied, startup
    n = args.startup_readings
    spool_emptied(lc)
    result = startup(lc, witness, base / "startup", n)
    notes.append(f"startup: {n:,} readings stored by the store's own code ({result.fill_s:.0f} s to fill, "
                 f"{result.db_mb:.0f} MB database), then `python -m store_and_forward` launched: "
                 f"{result.first_s:.2f} s to its first batch recorded by the cloud ({result.first_readings} "
                 f"readings in it); python start-up, the IPC connection and SubscribeToIoTCore included")
    return [Row("startup", f"seconds to the first forward, {n:,} stored", result.first_s, aim=Aim("<", 2, " s"))]


def flood_rows(args, lc, witness, base: Path, notes: list[str]) -> list[Row]:
    from .flood import flood
    settle = min(20.0, args.flood_seconds)
    r = flood(lc, witness, base / "flood", args.flood_seconds, settle=settle)
    notes.append(f"flood: {r.published:,} messages published in {r.seconds:.0f} s ({r.published / r.seconds:,.0f}/s "
                 f"asked 2,000/s) by one real IPC client, then 1 Hz for {settle:.0f} s; the store took {r.stored:,} and dropped "
                 f"{r.overloaded:,} at its bounded inbox (counted as overloaded; a real sensor sends them again); "
                 f"RSS {r.rss_before_mb:.1f} MB before, {r.rss_after_mb:.1f} MB {settle:.0f} s after (the fault trial, inbox "
                 f"unbounded: 41 -> 246 MB, 228 MB after; not run here)")
    from .flood import new_runs
    runs = flood(lc, witness, base / "flood-runs", args.flood_seconds / 2, settle=settle, shape=new_runs)
    notes.append(f"flood of run ids: {runs.published:,} messages in {runs.seconds:.0f} s, each of a new run; the "
                 f"store took {runs.stored:,} (MAX_RUNS: runs with readings on the device), the rest kept as "
                 f"dead letters; RSS {runs.rss_before_mb:.1f} MB before, {runs.rss_peak_mb:.1f} MB at most "
                 f"(unbounded before: 40 -> 99 MB in 30 s)")
    return [Row("flood", f"RSS, MB (peak, {r.published / r.seconds:,.0f} msg/s for {r.seconds:.0f} s)",
                r.rss_peak_mb, aim=Aim("<", 80, " MB")),
            Row("flood", "RSS growth, MB (peak - before)", r.rss_peak_mb - r.rss_before_mb, aim=Aim("<", 40, " MB")),
            Row("flood", f"RSS growth, MB (a new run each message, {runs.seconds:.0f} s)",
                runs.rss_peak_mb - runs.rss_before_mb, aim=Aim("<", 40, " MB"))]


def drain_rows(args, lc, witness, base: Path, notes: list[str]) -> list[Row]:
    from .drain import drain_naive, drain_store
    from .readings import daily
    n = args.readings
    t0 = time.time_ns() // 10**6 - n * 1000
    ours = drain_store(lc, witness, base / "drain", list(daily(n, device=lc.thing, run="d1a1b2c3", t0_ms=t0)))
    naive = drain_naive(lc, witness, base / "naive", list(daily(n, device=lc.thing, run="0a1ve000", t0_ms=t0)),
                        args.naive_seconds)
    rate = n / ours.seconds
    per_batch = n / ours.batches
    wire = ours.wire_bytes / n
    top = ceiling(per_batch, wire)
    echo_units = 2 * ours.units * 1000 / n
    rule_units = (ours.units + ours.batches) * 1000 / n
    naive_rate = naive.received / naive.seconds
    naive_wire = naive.wire_bytes / max(1, naive.messages)
    naive_top = ceiling(1, naive_wire)
    naive_drain = n / naive_rate if naive_rate else None
    notes.append(f"drain: {n:,} readings in {ours.batches} batches ({per_batch:,.0f} readings per batch, "
                 f"{ours.copies} copies); ceiling = min(100 publishes/s x {per_batch:,.0f}, 512 KiB/s / "
                 f"{wire:.1f} B) = {top:,.0f} readings/s; the store's default share (max_publishes_per_s "
                 f"{STORE_PUBLISHES_PER_S}, max_bytes_per_s {STORE_BYTES_PER_S:,}: headroom for other components "
                 f"on the core's connection) caps it at "
                 f"{100 * ceiling(per_batch, wire, STORE_PUBLISHES_PER_S, STORE_BYTES_PER_S) / top:.0f} % of it "
                 f"in the long run (the store's and the bridge's limiters both let up to a second of quota build "
                 f"up while idle, so a short run can do better)")
    first_cpu = "its first batch not seen" if ours.first_cpu_s is None else \
        f"{ours.first_cpu_s:.2f} s of it until its first batch was in the cloud: Python's start-up, imports, the " \
        f"IPC connection and the first batches"
    notes.append(f"drain: time from launching the component (python start-up, IPC connection, SubscribeToIoTCore "
                 f"included) to the last reading recorded by `localgg cloud record`; every batch confirmed by its "
                 f"echo and deleted {ours.confirmed_s:.1f} s after launch; store process: {ours.cpu_s:.2f} s CPU "
                 f"({first_cpu}), peak RSS {ours.peak_rss_mb:.0f} MB")
    notes.append(f"naive: ran {naive.seconds:.0f} s (then stopped: at 100/s a day takes ~15 min): the cloud "
                 f"received {naive.received:,} readings "
                 f"({naive_rate:,.0f}/s, extrapolated to {n:,}); it deleted {naive.deleted:,} rows on return, so "
                 f"{max(0, naive.deleted - naive.received):,} were only in the nucleus's memory spooler (lost if "
                 f"it restarts); {naive.refused:,} publishes refused (spooler full); units: one per message, "
                 f"and it has no confirmation")
    notes.append(f"units: confirm echo (default) = each batch in + its echo out, same size (measured batches); "
                 f"confirm rule = each batch + one small acknowledgement ({rule_units:.1f} per 1,000, computed "
                 f"from the same batches: localgg has no rules engine)")
    return [Row("drain", f"seconds to drain {n:,} readings", ours.seconds, naive_drain,
                naive_drain / ours.seconds if naive_drain else None, Aim("<", 30, " s")),
            Row("drain", "readings/s into the cloud", rate, naive_rate, rate / naive_rate if naive_rate else None),
            Row("drain", "store CPU per reading drained, µs", ours.cpu_s * 1e6 / n, aim=Aim("<=", 15, " µs")),
            Row("drain", "% of the quota-bound ceiling", 100 * rate / top, 100 * naive_rate / naive_top,
                aim=Aim(">=", 80, " %")),
            Row("drain", "bytes on the wire per reading", wire, naive_wire, naive_wire / wire, Aim("<", 90, " B")),
            Row("drain", "billed 5 KB units / 1,000 readings (echo)", echo_units, 1000.0, 1000.0 / echo_units,
                Aim("<=", 25)),
            Row("drain", "billed 5 KB units / 1,000 readings (rule)", rule_units, 1000.0, 1000.0 / rule_units,
                Aim("<=", 25))]


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    base = Path(tempfile.mkdtemp(prefix="sbench-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None))
    thing = "bench-thing"
    rows: list[Row] = []
    notes: list[str] = []
    started = time.monotonic()
    print(f"store benchmark ({args.mode}): parts {', '.join(args.parts)}; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}, Python {platform.python_version()}, work in {base}", flush=True)
    try:
        if "ingest" in args.parts:
            rows += ingest_rows(args, base, thing, notes)
        if {"footprint", "drain", "slow-link", "flood", "startup"} & set(args.parts):
            from .drain import naive_topic, store_topic
            from .localcloud import LocalCloud
            from .witness import Witness, batch_keys, reading_key
            with LocalCloud(base / "localgg", thing) as lc:
                lc.deploy_shadow_manager()
                topics = {store_topic(thing): batch_keys, naive_topic(thing): reading_key}
                lc.record(list(topics), base / "received.db")
                witness = Witness(base / "received.db", topics)
                try:
                    if "footprint" in args.parts:
                        rows += footprint_rows(args, lc, witness, base, notes)
                    if "drain" in args.parts:
                        rows += drain_rows(args, lc, witness, base, notes)
                    if "slow-link" in args.parts:
                        rows += slow_link_rows(args, lc, witness, base, notes)
                    if "flood" in args.parts:
                        rows += flood_rows(args, lc, witness, base, notes)
                    if "startup" in args.parts:
                        rows += startup_rows(args, lc, witness, base, notes)
                finally:
                    witness.close()
            notes.append(f"localgg: in-process core, IoT Core = mosquitto {mosquitto_version()} over mutual TLS; "
                         f"quotas enforced by localgg's bridge (100 publishes/s, 512 KiB/s, 2.5 MiB memory "
                         f"spooler) and the broker (128 KB packets)")
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print()
    print(render(rows, notes))
    print(f"\n({time.monotonic() - started:.0f} s; ratio: how many times better ours is than the naive "
          f"publisher / baseline, measured in this run)")
    if args.mode == "smoke":
        print("(smoke run: tiny sizes, the aims are not meaningful here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
