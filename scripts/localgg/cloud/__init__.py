"""The AWS side, locally: an IoT Core stand-in (mosquitto with mutual TLS), a cloud shadow
service and a recorder. It runs as its own process (`localgg cloud start`), so restarting
the core does not restart the cloud, as on a real device."""
