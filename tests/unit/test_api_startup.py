"""The API answers before the controller's core has started (its listener opens first)."""
from controller.api import NorthboundApi
from controller.config import Config
from controller.core import WeftCore
from ovsdb.idl import ThreadHub


def test_a_request_before_the_core_has_started_is_told_to_try_again(tmp_path):
    core = WeftCore(ThreadHub, Config(state_dir=str(tmp_path / "state")))  # not started: no NB connection yet
    status, body = NorthboundApi(core).handle("GET", "/v1/status")
    assert status == 503 and "try again shortly" in body["error"] and body["retry"] is True
