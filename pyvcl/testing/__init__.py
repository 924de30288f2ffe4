"""Helpers for testing and benchmarking pyvcl against a real, private VPP.

`pyvcl.testing.vpp` finds a VPP install and runs throw-away VPP instances whose every path
(sockets, runtime dir, logs, shared-memory prefix) is private; `pyvcl.testing.plugin` wraps it
as pytest fixtures (load it with ``pytest_plugins = ["pyvcl.testing.plugin"]``).
"""
