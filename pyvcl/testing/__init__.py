"""Helpers for testing and benchmarking pyvcl against a real, private VPP.

`pyvcl.testing.vpp` runs throw-away VPP instances whose every path (sockets, runtime dir, logs,
shared-memory prefix) is private; `install` finds a VPP install, `hoststack` sets up the
topologies (namespaces, the two-VRF TCP setup) and writes vcl.confs, `plugin` wraps it all as
pytest fixtures (load it with ``pytest_plugins = ["pyvcl.testing.plugin"]``), `conformance`
runs the same socket checks over kernel sockets and pyvcl, and `ldp` runs programs under C
VCL's LD_PRELOAD library.
"""
