"""greengrass.log keeps what went wrong, with the traceback."""

import pytest
from awsiot.greengrasscoreipc.model import ServiceError

from conftest import wait_for
from localgg.server import Operation


def log(core):
    return (core.kernel.root / "logs" / "greengrass.log").read_text()


def test_a_handler_failure_is_a_service_error_and_its_traceback_is_logged(core):
    def broken(call):
        raise KeyError("boom-in-handler")
    core.call(lambda: core.kernel.dispatcher.add(Operation("ListComponents", broken)))
    with pytest.raises(ServiceError) as err:
        core.cli_client().list_components()
    assert err.value.message == "ListComponents failed: 'boom-in-handler'"
    text = log(core)
    assert "ListComponents failed for aws.greengrass.Cli" in text
    assert "Traceback (most recent call last)" in text and "KeyError: 'boom-in-handler'" in text


def test_an_error_nobody_awaited_on_the_core_loop_reaches_the_log(core):
    core.loop.call_soon_threadsafe(lambda: 1 / 0)
    wait_for(lambda: "ZeroDivisionError: division by zero" in log(core), 10, message="the error in greengrass.log")
    assert "[ERROR]" in log(core) and "unhandled error: Exception in callback" in log(core)
