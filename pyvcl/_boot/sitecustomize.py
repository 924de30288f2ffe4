"""pyvcl run's hook into Python child processes (see pyvcl.interpose.boot).

`pyvcl run` puts this directory first on PYTHONPATH, so a Python child imports this file as
its ``sitecustomize`` at interpreter start.  It takes the directory off ``sys.path`` again (the
child's program sees the path plain Python would give it), enables the mode ``PYVCL_RUN``
describes, and then runs the ``sitecustomize`` it shadows, if any, as that module.

It must never break the child: nothing here raises, and without ``PYVCL_RUN`` it imports
nothing from pyvcl.
"""

from __future__ import annotations

import os
import sys


def _boot(here: str) -> None:
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    if not os.environ.get("PYVCL_RUN"):
        return
    try:
        from pyvcl.interpose.boot import from_environment
    except ImportError:
        # pyvcl is not installed where the child looks (a source tree run by path): import it
        # from the tree this file is in, without leaving that on the child's path.
        sys.path.insert(0, os.path.dirname(os.path.dirname(here)))
        try:
            from pyvcl.interpose.boot import from_environment
        except ImportError as e:
            sys.stderr.write(f"pyvcl run: cannot import pyvcl ({e}); using kernel sockets\n")
            return
        finally:
            del sys.path[0]
    try:
        from_environment()
    except Exception as e:  # (from_environment reports its own errors: this is a bug's net)
        sys.stderr.write(f"pyvcl run: {type(e).__name__}: {e}; using kernel sockets\n")


def _run_shadowed() -> None:
    """Run the next ``sitecustomize`` on the path (this one is off it now) in our place."""
    from importlib.machinery import PathFinder
    from importlib.util import module_from_spec

    spec = PathFinder.find_spec("sitecustomize", sys.path)
    if spec is None or spec.loader is None:
        return
    module = module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)  # its errors are reported by site, as for any sitecustomize


_boot(os.path.dirname(os.path.abspath(__file__)))
_run_shadowed()
