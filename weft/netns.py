"""Work inside a container's network namespace from the calling thread, without forking.

setns(2) moves only the calling thread, so a netlink socket or ioctl made inside `in_netns` acts on
the container while the rest of the process stays where it was. pyroute2's NetNS would fork a helper
process per use instead, and `nsenter ethtool` a process per call: both cost milliseconds per attach.
"""
import contextlib
import ctypes
import fcntl
import os
import socket
import struct
import threading

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17  # set TX checksum offload; features that depend on it (TSO...) follow it off

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(path):
    """Runs the block with this thread inside the network namespace at `path`."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def tx_checksum_off(ifname):
    """`ethtool -K IFNAME tx off` as one ioctl, in the current thread's namespace."""
    value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0))
    request = struct.pack("16sP", ifname.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, SIOCETHTOOL, request)
