"""What a device costs online: billed IoT Core units per 1,000 readings, and how stale the
cloud is, at 1 Hz with the link up. The store's own code (Forwarder + Store on a real SQLite
file) on a simulated clock, so an hour takes seconds and every figure is the same each run;
IoT Core is modelled as it bills (../shared/reference/iot-rules-and-lambda.md):

- every publish of the device and every message IoT Core delivers to it is metered in 5 KB
  units of payload + topic: a batch, its echo (confirm: echo: the device's own subscription
  gets its batch back), or the rule's acknowledgement (confirm: rule: a republish of the
  batch id, QoS 0);
- a shadow report is one UpdateThingShadow that ShadowManager sends to the cloud and one
  `update/accepted` that comes back (two messages of the document's size);
- the link takes 100 ms each way. Readings reach the store 50 ms after they are sampled.

Staleness: for each reading, when the cloud has it minus when it was sampled (p50, max); the
cloud's newest reading is never older than the max. The naive publisher: one publish per
reading, no confirmation, no shadow (what the tutorials do).

    python -m storebench.online [--readings 1000] [--latencies 1000,10000,60000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

THING = "pi-bench-01"
RUN = "0123456789abcdef"
T0 = 1_764_338_400_000
LINK_MS = 100
PIPELINE_MS = 50
TICK_MS = 50
UNIT = 5120


def units(nbytes: int) -> int:
    return max(1, -(-nbytes // UNIT))


def reading(seq: int, t: int) -> dict:
    return {"device": THING, "run": RUN, "seq": seq, "t": t, "mono": seq * 1000, "clock_synced": True,
            "status": "ok", "temperature": round(21.5 + (seq % 17) * 0.01, 2), "temperature_raw": 24.13,
            "humidity": round(45.0 + (seq % 11) * 0.1, 1), "pressure": 1013.25, "gas_resistance": 50312.0,
            "heat_stable": True, "cpu_temperature": 48.3, "correction": "cpu_factor", "held_from": seq}


class Port:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.reports: list[dict] = []

    def publish_ack(self, topic: str, doc: dict) -> None:
        pass

    def publish_iot(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, payload))

    def report(self, section: dict) -> None:
        self.reports.append({"state": {"reported": {"store": json.loads(json.dumps(section))}}})


def simulate(max_latency_ms: int, confirm: str, readings: int = 1000, hz: float = 1.0,
             overrides: dict | None = None) -> dict:
    from backfill_common.clock import FakeClock
    from backfill_common.settings import Settings
    from store_and_forward import packer
    from store_and_forward.forwarder import Forwarder
    from store_and_forward.store import Store, StoreConfig

    settings = dict(Settings("config-store", "forward").defaults)
    settings.update(overrides or {})
    settings.update(max_latency_ms=max_latency_ms, confirm=confirm)
    settings["commit_interval_ms"] = min(settings["commit_interval_ms"], max(max_latency_ms, 1000))
    clock = FakeClock(wall_ms=T0, mono_ms=0)
    port = Port()
    with tempfile.TemporaryDirectory() as work:
        store = Store(StoreConfig(Path(work) / "store.db"), clock)
        fwd = Forwarder(store, port, clock, settings, THING)
        for topic in fwd.iot_topics():
            fwd.iot_subscribed(topic)
        period = int(1000 / hz)
        events: list[tuple[int, str, bytes]] = []          # (due, topic, payload) coming back to the device
        arrived: dict[int, int] = {}                       # seq -> when the cloud had it
        units_out = units_back = seen = 0
        end = readings * period + 120_000
        next_seq, now = 0, 0
        while now <= end and (next_seq < readings or len(arrived) < readings):
            if next_seq < readings and now >= next_seq * period + PIPELINE_MS:
                fwd.on_reading("backfill/readings/corrected", reading(next_seq, T0 + next_seq * period))
                next_seq += 1
            fwd.tick()
            for topic, payload in port.published[seen:]:
                units_out += units(len(payload) + len(topic))
                doc = json.loads(payload)
                if "dead_letter" not in doc:
                    for r in packer.decode(doc):
                        arrived.setdefault(r["seq"], clock.mono_ms() + LINK_MS)
                if confirm == "echo":
                    events.append((clock.mono_ms() + 2 * LINK_MS, topic, payload))
                elif confirm == "rule":
                    ack = json.dumps({"batch": doc.get("batch"), "device": THING}).encode()
                    events.append((clock.mono_ms() + 2 * LINK_MS, fwd.rule_topic, ack))
            seen = len(port.published)
            due = [e for e in events if e[0] <= clock.mono_ms()]
            events = [e for e in events if e[0] > clock.mono_ms()]
            for _, topic, payload in due:
                units_back += units(len(payload) + len(topic))
                fwd.on_iot(topic, payload)
            clock.advance(TICK_MS)
            now = clock.mono_ms()
        fwd.close()
    stale = [arrived[s] - s * period for s in range(readings) if s in arrived]
    shadow_bytes = [len(json.dumps(r, separators=(",", ":"))) for r in port.reports]
    per = 1000 / readings
    return {
        "readings": readings, "delivered": len(arrived), "messages": seen,
        "units_readings": (units_out + units_back) * per,
        "units_shadow": sum(2 * units(b + 40) for b in shadow_bytes) * per,
        "reports": len(port.reports), "report_bytes": statistics.mean(shadow_bytes) if shadow_bytes else 0,
        "p50_s": statistics.median(stale) / 1000 if stale else None,
        "max_s": max(stale) / 1000 if stale else None,
    }


def naive(readings: int = 1000) -> dict:
    topic = f"dt/naive/{THING}/readings"
    payload = [len(json.dumps(reading(s, T0 + s * 1000))) for s in range(readings)]
    return {"readings": readings, "delivered": readings, "messages": readings,
            "units_readings": sum(units(p + len(topic)) for p in payload) * 1000 / readings,
            "units_shadow": 0.0, "reports": 0, "report_bytes": 0,
            "p50_s": (PIPELINE_MS + LINK_MS) / 1000, "max_s": (PIPELINE_MS + LINK_MS) / 1000}


def table(readings: int, latencies: list[int]) -> tuple[list[list[str]], dict]:
    from backfill_common.settings import Settings
    default_latency = Settings("config-store", "forward").defaults["max_latency_ms"]
    base = naive(readings)
    rows = [["naive publisher (1 publish per reading)", f"{base['messages']}", f"{base['units_readings']:.0f}",
             "0", f"{base['units_readings']:.0f}", "1.0x", f"{base['p50_s']:.1f}", f"{base['max_s']:.1f}"]]
    results = {"naive": base}
    for confirm in ("echo", "rule"):
        for latency in latencies:
            r = simulate(latency, confirm, readings)
            results[(confirm, latency)] = r
            total = r["units_readings"] + r["units_shadow"]
            mark = " (default)" if latency == default_latency and confirm == "echo" else ""
            rows.append([f"ours, confirm {confirm}, max_latency_ms {latency}{mark}", f"{r['messages']}",
                         f"{r['units_readings']:.0f}", f"{r['units_shadow']:.1f}", f"{total:.0f}",
                         f"{base['units_readings'] / total:.1f}x", f"{r['p50_s']:.1f}", f"{r['max_s']:.1f}"])
    return rows, results


HEADER = ["publisher", "publishes", "units: readings", "units: shadow", "units in all", "cheaper",
          "stale p50 s", "stale max s"]


def render(rows: list[list[str]]) -> str:
    lines = [HEADER] + rows
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = []
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench online", description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=1000, help="readings at 1 Hz per row (default 1,000)")
    parser.add_argument("--latencies", default="1000,10000,60000", help="max_latency_ms values (comma-separated)")
    args = parser.parse_args(argv)
    latencies = [int(v) for v in args.latencies.split(",") if v.strip()]
    rows, results = table(args.readings, latencies)
    print(f"online at 1 Hz, {args.readings} readings per row; billed 5 KB units per 1,000 readings "
          f"(confirmations and shadow reports included); simulated clock, the store's own code")
    print(render(rows))
    print("\nconfirmations are subscribed at QoS 0 (the store's CONFIRM_QOS): at QoS 1 each would cost the "
          "device's PUBACK too, one more billed message per batch over MQTT 3.1.1")
    from backfill_common.settings import Settings
    d = Settings("config-store", "forward").defaults
    r = results.get(("echo", d["max_latency_ms"]))
    if r is not None:
        print(f"\ndefaults (confirm echo, max_latency_ms {d['max_latency_ms']}, shadow_interval_s "
              f"{d['shadow_interval_s']}): {r['units_readings']:.0f} units per 1,000 readings for the readings and "
              f"their confirmations (aim <= 200), stale at most {r['max_s']:.1f} s (aim <= 10); the shadow "
              f"{r['units_shadow']:.0f} more, {100 * r['units_shadow'] / r['units_readings']:.1f} % of that (aim < 10 %): "
              f"{r['reports']} reports of {r['report_bytes']:.0f} B on average")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
