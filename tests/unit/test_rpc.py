"""The one-shot OVSDB client that `weft attach` uses, imported the way a CNI daemon would use it."""
import subprocess
import sys
import textwrap

import pytest


def test_attach_threads_stay_joinable_and_eventlet_stays_out():
    """Importing eventlet from a thread while others run leaves that thread impossible to join (a
    thread pool's shutdown would hang); `ovs.poller` imports it unless the client keeps it out."""
    pytest.importorskip("ovs")
    script = textwrap.dedent("""
        import sys, threading, time
        from ovsdb import rpc

        def plug():  # as attach does; no server is needed to import what it needs
            try:
                rpc.transact("unix:/nonexistent/db.sock", "Open_vSwitch", [], timeout=0.5)
            except rpc.OvsdbError:
                pass
            time.sleep(0.1)
        threads = [threading.Thread(target=plug) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        print(sum(t.is_alive() for t in threads), "eventlet" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True,
                            timeout=30, cwd=__file__.rsplit("/tests/", 1)[0])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "False"]
