import shutil

import pytest

from controller.api import NorthboundApi
from controller.config import Config
from controller.core import WeftCore
from ovsdb.idl import ThreadHub


@pytest.fixture
def core(tmp_path):
    """A controller core on plain threads with its embedded NB (a real ovsdb-server), no switches."""
    if not shutil.which("ovsdb-server"):
        pytest.skip("ovsdb-server is not installed (scripts/setup.sh installs it)")
    core = WeftCore(ThreadHub, Config(state_dir=str(tmp_path / "state"), underlay_mtu=1600))
    core.start()
    core.nb.conn.wait_synced(10)
    core.wait_active(10)  # the only controller: it takes the NB lock right away
    yield core
    core.stop()


@pytest.fixture
def api(core):
    return NorthboundApi(core)
