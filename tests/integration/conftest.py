"""Fixtures for integration tests: real labs (namespaces + Open vSwitch), see weft/testing.py."""
import pytest

from weft.testing import LabFactory, skip_reason


@pytest.fixture(scope="session")
def make_lab():
    """make_lab(hosts=2, controller=True, shared=True) -> weft.testing.Lab; all labs go down at the end."""
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
