"""One real controller for a test module (its API on a unix socket in a fresh directory)."""
import contextlib
import os
import shutil
import tempfile

import pytest

from weft.testing import Controller, skip_reason


@contextlib.contextmanager
def running_controller(prefix, **options):
    """A weft.testing.Controller(**options) in a new /tmp directory (ctl.dir), stopped and removed
    afterwards; skips the test where integration tests cannot run. The directory is world-traversable,
    so that what keeps other users from the API is the socket's own mode, not a directory's."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    directory = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(directory, 0o755)
    ctl = Controller(directory, **options)
    try:
        yield ctl
    finally:
        ctl.stop()
        shutil.rmtree(ctl.dir)
