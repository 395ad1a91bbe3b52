"""io.backfill.TemperatureCorrection: the edge-temperature-correction Lambda and its Greengrass runner.

    python -m temperature_correction        # on Greengrass (see runner.py)
    temperature_correction.handler.handler  # as an AWS Lambda function (see handler.py)

correction.py holds the pure maths; handler.py the Lambda entry point; runner.py the IPC wiring.
"""
