"""Example component: publishes {"n", "greeting"} on local pub/sub every `interval` seconds,
and the same to IoT Core on dt/<thing>/counter (QoS 1)."""

import json
import os
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage, QOS


def main() -> None:
    client = GreengrassCoreIPCClientV2()
    config = client.get_configuration().value
    topic, interval = config["topic"], float(config["interval"])
    cloud_topic = f"dt/{os.environ['AWS_IOT_THING_NAME']}/counter"
    print(f"publishing on {topic} and {cloud_topic} every {interval} s as pid {os.getpid()}", flush=True)
    n = 0
    while True:
        greeting = client.get_configuration(key_path=["greeting"]).value["greeting"]
        message = {"n": n, "greeting": greeting, "pid": os.getpid()}
        client.publish_to_topic(topic=topic, publish_message=PublishMessage(json_message=JsonMessage(message=message)))
        try:
            client.publish_to_iot_core(topic_name=cloud_topic, qos=QOS.AT_LEAST_ONCE, payload=json.dumps(message))
        except Exception as exc:  # e.g. a core with no IoT Core connection configured
            print(f"not forwarded to IoT Core: {exc}", flush=True)
        n += 1
        time.sleep(interval)


if __name__ == "__main__":
    main()
