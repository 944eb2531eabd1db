"""Fixtures for integration tests: real labs (namespaces + Open vSwitch), see weft/testing.py."""
import pytest

from weft.testing import LabFactory, runtimes_skip_reason, skip_reason


@pytest.fixture(scope="session")
def make_lab():
    """make_lab(hosts=2, controller=True, shared=True, external=False, tls=False, runtimes=False)
    -> weft.testing.Lab; all labs go down at the end. A lab with runtimes (dockerd and podman on
    every host) is expensive: share it (the default)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    factory = LabFactory()
    yield factory.make
    factory.close()


@pytest.fixture(scope="session")
def lab(make_lab):
    """The default shared lab: 2 hosts joined to a running controller."""
    return make_lab()


@pytest.fixture(scope="session")
def runtimes_lab(make_lab):
    """The shared lab with runtimes: 2 hosts, a controller, and on every host a dockerd and podman
    (weft.labruntimes) with the image weft/busybox."""
    reason = runtimes_skip_reason()
    if reason:
        pytest.skip(reason)
    return make_lab(runtimes=True)
