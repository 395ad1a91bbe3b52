"""Example component: publishes {"n", "greeting"} on local pub/sub every `interval` seconds."""

import os
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage


def main() -> None:
    client = GreengrassCoreIPCClientV2()
    config = client.get_configuration().value
    topic, interval = config["topic"], float(config["interval"])
    print(f"publishing on {topic} every {interval} s as pid {os.getpid()}", flush=True)
    n = 0
    while True:
        greeting = client.get_configuration(key_path=["greeting"]).value["greeting"]
        message = {"n": n, "greeting": greeting, "pid": os.getpid()}
        client.publish_to_topic(topic=topic, publish_message=PublishMessage(json_message=JsonMessage(message=message)))
        n += 1
        time.sleep(interval)


if __name__ == "__main__":
    main()
