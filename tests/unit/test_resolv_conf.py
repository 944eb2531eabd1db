"""Where `weft attach --dns` writes a container's resolv.conf: only for a named network namespace,
the file `ip netns exec` bind-mounts; never a path a name could steer elsewhere."""
import pytest

from weft.attach import resolv_conf_path


@pytest.mark.parametrize("container,path", [
    ("web", "/etc/netns/web/resolv.conf"),
    ("/run/netns/web", "/etc/netns/web/resolv.conf"),
    ("/var/run/netns/wl-lab-c-d1", "/etc/netns/wl-lab-c-d1/resolv.conf"),
    ("12345", None),                 # a PID: its namespace has no name
    ("/proc/12345/ns/net", None),     # another path
    ("/run/netns/", None), ("..", None), (".", None), ("a/../../etc", None), ("/run/netns/../x", None),
])
def test_only_a_named_netns_has_a_resolv_conf(container, path):
    assert resolv_conf_path(container) == path
