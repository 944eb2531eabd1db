"""One-shot OVSDB transactions over JSON-RPC (the `ovs` library's client), for short-lived commands.

`weft attach` runs once per container; a full IDL replica of the host's database would cost it a
schema fetch and a monitor. A single `transact` is one round trip.
"""
import os
import sys


class OvsdbError(Exception):
    pass


def default_remote():
    """OVS's own default: the db.sock in OVS_RUNDIR (so inside `weft lab exec HOST` it is that host's)."""
    return "unix:" + os.path.join(os.environ.get("OVS_RUNDIR", "/var/run/openvswitch"), "db.sock")


def transact(remote, database, ops, timeout=10.0):
    """Runs ops in one transaction; returns the per-op results or raises OvsdbError with the reason."""
    ovs = _ovs_client()
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), int(timeout * 1000))
    if error:
        raise OvsdbError(f"cannot connect to the OVSDB server at {remote}: {os.strerror(error)}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        error, reply = rpc.transact_block(ovs.jsonrpc.Message.create_request("transact", [database, *ops]))
    finally:
        rpc.close()
    if error:
        raise OvsdbError(f"OVSDB transaction on {remote} failed: {os.strerror(error)}")
    if reply.error:
        raise OvsdbError(f"OVSDB refused the transaction: {reply.error}")
    for result in reply.result:
        if isinstance(result, dict) and "error" in result:
            raise OvsdbError(f"OVSDB refused the transaction: {result['error']}: {result.get('details', '')}")
    return reply.result


def _ovs_client():
    """The `ovs` client modules, imported here rather than at the top (CLI start-up time) and without
    eventlet. `ovs.poller` imports eventlet only to ask whether it has patched `select`, which it
    cannot have done if nothing imported it; and importing eventlet from a thread while other threads
    run (a CNI daemon attaching in parallel) leaves that thread impossible to join."""
    if "eventlet" in sys.modules or "ovs.poller" in sys.modules:
        import ovs.jsonrpc
        import ovs.stream
        return ovs
    sys.modules["eventlet"] = None  # makes `from eventlet import ...` raise ImportError, which ovs expects
    try:
        import ovs.jsonrpc
        import ovs.stream
    finally:
        del sys.modules["eventlet"]
    return ovs
