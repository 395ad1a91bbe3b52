"""Local pub/sub throughput and latency between two component processes, with the real client.

    python -m localgg.bench [--messages 20000] [--size 200]

A localgg core runs in this process; a publisher and a subscriber run as two separate
processes that authenticate as two components, exactly as deployed components do.
Each message carries its send time (CLOCK_MONOTONIC, shared by processes); the
subscriber records arrival times. Throughput = messages / (first send -> last arrival).
Every row runs in the same invocation, so ratios compare like with like on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TOPIC = "bench/readings"
PUBSUB = "aws.greengrass.ipc.pubsub"


def _client():
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    return GreengrassCoreIPCClientV2(executor=None)


def subscriber_main(count: int, out: str) -> None:
    """Record (sent_ns, arrived_ns) for `count` messages, then write them to `out`."""
    client = _client()
    times: list[tuple[int, int]] = []
    done = threading.Event()

    def on_event(event) -> None:
        now = time.monotonic_ns()
        if event.json_message is not None:
            sent = int(event.json_message.message["t"])
        else:
            sent = int.from_bytes(event.binary_message.message[:8], "big")
        times.append((sent, now))
        if len(times) >= count:
            done.set()

    client.subscribe_to_topic(topic=TOPIC, on_stream_event=on_event)
    print("ready", flush=True)
    if not done.wait(300):
        print(f"only {len(times)} of {count} arrived", file=sys.stderr)
    Path(out).write_text(json.dumps(times))
    client.close()


def publisher_main(count: int, size: int, kind: str, window: int) -> None:
    from awsiot.greengrasscoreipc.model import BinaryMessage, JsonMessage, PublishMessage
    client = _client()
    filler = "x" * max(0, size - 40)
    pending = []
    for i in range(count):
        now = time.monotonic_ns()
        if kind == "json":
            message = PublishMessage(json_message=JsonMessage(message={"t": str(now), "i": i, "f": filler}))
        else:
            message = PublishMessage(binary_message=BinaryMessage(message=now.to_bytes(8, "big") + b"x" * (size - 8)))
        if window <= 1:
            client.publish_to_topic(topic=TOPIC, publish_message=message)
            continue
        pending.append(client.publish_to_topic_async(topic=TOPIC, publish_message=message))
        if len(pending) >= window:
            pending.pop(0).result(30)
    for future in pending:
        future.result(30)
    client.close()


def _child(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import sys; from localgg.bench import _entry; _entry(sys.argv[1:])",
                             *args], env=env, stdout=subprocess.PIPE, text=True)


def _entry(argv: list[str]) -> None:
    if argv[0] == "sub":
        subscriber_main(int(argv[1]), argv[2])
    else:
        publisher_main(int(argv[1]), int(argv[2]), argv[3], int(argv[4]))


def run_case(kernel, loop, count: int, size: int, kind: str, window: int, workdir: Path) -> dict:
    def register(name: str, operations: list[str]) -> dict:
        config = {"accessControl": {PUBSUB: {"bench": {"operations": operations, "resources": [TOPIC]}}}}
        future = asyncio.run_coroutine_threadsafe(_call(lambda: kernel.add_external_component(name, config)), loop)
        return dict(os.environ, **future.result(10))

    sub_env = register("bench.Subscriber", ["aws.greengrass#SubscribeToTopic"])
    pub_env = register("bench.Publisher", ["aws.greengrass#PublishToTopic"])
    out = workdir / f"times-{kind}-{window}.json"
    subscriber = _child(sub_env, "sub", str(count), str(out))
    assert subscriber.stdout.readline().strip() == "ready"
    publisher = _child(pub_env, "pub", str(count), str(size), kind, str(window))
    publisher.wait(600)
    subscriber.wait(600)
    times = json.loads(out.read_text())
    if len(times) < count:
        raise RuntimeError(f"{count - len(times)} messages were lost")
    latencies = sorted((arrived - sent) / 1e6 for sent, arrived in times)
    elapsed = (max(a for _, a in times) - min(s for s, _ in times)) / 1e9
    return {"rate": count / elapsed, "p50": latencies[len(latencies) // 2],
            "p99": latencies[int(len(latencies) * 0.99) - 1]}


async def _call(fn):
    return fn()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=200, help="approximate message size in bytes")
    args = parser.parse_args(argv)
    from .kernel import Kernel
    workdir = Path(tempfile.mkdtemp(prefix="lggb-", dir="/tmp"))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    kernel = asyncio.run_coroutine_threadsafe(_call(lambda: Kernel(workdir / "gg")), loop).result()
    asyncio.run_coroutine_threadsafe(kernel.start(), loop).result(30)
    cases = [("json", 1, "JSON, one publish at a time (sync)"),
             ("json", 64, "JSON, 64 publishes in flight (async)"),
             ("binary", 64, "binary, 64 publishes in flight (async)")]
    print(f"localgg local pub/sub: {args.messages} messages of ~{args.size} bytes, publisher and subscriber "
          f"in separate processes, real GreengrassCoreIPCClientV2\n")
    print(f"{'case':<40} {'msg/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8}")
    base = None
    try:
        for kind, window, label in cases:
            result = run_case(kernel, loop, args.messages, args.size, kind, window, workdir)
            base = base or result["rate"]
            print(f"{label:<40} {result['rate']:>9.0f} {result['rate'] / base:>6.2f} "
                  f"{result['p50']:>8.2f} {result['p99']:>8.2f}", flush=True)
    finally:
        asyncio.run_coroutine_threadsafe(kernel.stop(), loop).result(30)
    print("\nratio: throughput relative to the first row, measured in this run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
