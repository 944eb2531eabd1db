"""Makes Ryu 4.34 start on the eventlet releases that run on Python 3.11.

Ryu's `ryu/app/wsgi.py` does `from eventlet.wsgi import ALREADY_HANDLED`, a name every eventlet that runs
on Python >= 3.10 has dropped, and `ryu-manager` always imports that module, so it dies at start.
Eventlet >= 0.31 iterates whatever a WSGI app returns, so an empty iterable is the right value.

The fix must be in place before *any* import of `ryu.app.wsgi`, including plain `ryu-manager`, which no
wrapper of ours runs. So `weft-eventlet-compat.pth` (installed into site-packages) imports this module at
interpreter start; it adds a lazy import hook that costs nothing until `eventlet.wsgi` is imported.
"""
import sys

_TARGET = "eventlet.wsgi"


class _EventletWsgiFixer:
    """A meta path finder (duck-typed: importing importlib.abc would cost every interpreter ~20 ms)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        spec = None
        for finder in sys.meta_path:  # the real module, from the finders after this one
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None:
            return None
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            if not hasattr(module, "ALREADY_HANDLED"):
                module.ALREADY_HANDLED = []

        spec.loader.exec_module = exec_module
        return spec


def install():
    if _TARGET in sys.modules:
        module = sys.modules[_TARGET]
        if not hasattr(module, "ALREADY_HANDLED"):
            module.ALREADY_HANDLED = []
    elif not any(isinstance(f, _EventletWsgiFixer) for f in sys.meta_path):
        sys.meta_path.insert(0, _EventletWsgiFixer())


install()
