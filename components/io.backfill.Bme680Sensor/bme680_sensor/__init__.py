"""io.backfill.Bme680Sensor: BME680 readings on local pub/sub, from a real chip on I2C or a
simulated one (simchip) driven by Pimoroni's `bme680` library in both cases.

Run on Greengrass with ``python -u -m bme680_sensor``."""
