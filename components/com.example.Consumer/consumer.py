"""Example component: appends every message on the topic (argv[1]) to received.jsonl in its work dir."""

import json
import os
import sys
import threading

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2


def main() -> None:
    topic = sys.argv[1]
    client = GreengrassCoreIPCClientV2()
    out = open("received.jsonl", "a", buffering=1)

    def on_message(event) -> None:
        message = event.json_message.message
        out.write(json.dumps({**message, "consumer_pid": os.getpid()}) + "\n")
        print(f"received {message}", flush=True)

    client.subscribe_to_topic(topic=topic, on_stream_event=on_message)
    print(f"subscribed to {topic} as pid {os.getpid()}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
