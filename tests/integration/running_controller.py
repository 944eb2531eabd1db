"""One real controller for a test module (its API on a unix socket in a fresh directory)."""
import contextlib
import shutil
import tempfile

import pytest

from weft.testing import Controller, skip_reason


@contextlib.contextmanager
def running_controller(prefix):
    """A weft.testing.Controller in a new /tmp directory (ctl.dir), stopped and removed afterwards;
    skips the test where integration tests cannot run."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    ctl = Controller(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield ctl
    finally:
        ctl.stop()
        shutil.rmtree(ctl.dir)
