"""pytest plugin: private-VPP fixtures.  Load it with ``pytest_plugins = ["pyvcl.testing.plugin"]``.

Fixtures:

* ``vpp_install`` (session) -- the `VppInstall` from `find_vpp`; skips the test, with
  `why_missing`'s reason, when there is none, and on machines whose VPP shared-memory
  layouts pyvcl does not know yet (`pyvcl.wire.abi`: attaching would be refused).
* ``vpp`` (module) -- a running `VppInstance` shared by a module's tests.  A module can
  override the ``vpp_options`` fixture (module scope, a dict of `VppInstance` keyword
  arguments) to configure it.  ``$PYVCL_VPP_WORKERS=N`` gives it N worker threads (unless
  ``vpp_options`` says otherwise), to run the whole suite against a VPP with workers.
* ``vpp_with_workers`` (module) -- a `VppInstance` with one worker thread.
* ``vpp_factory`` (function) -- ``vpp_factory(**kwargs)`` starts a new instance with those
  `VppInstance` arguments; every instance it made is stopped at teardown.
* ``vpp_netns`` (function) -- a `pyvcl.testing.netns.VethNamespace` on the module's ``vpp``:
  a network namespace of the test's own reaching VPP only through a veth pair and VPP's
  af_packet host-interface, torn down after the test; skips when that cannot be built here
  (not root, no ``ip netns``, no af_packet plugin).

And a fixture maker: ``stack = vcl_stack_fixture(ct_port, tcp_port)`` in a test module gives it
a module-scoped ``stack`` fixture, a `pyvcl.testing.conformance.VclStack`, parametrised over
cut-through (ports from ``ct_port``) and VPP's TCP stack (ports from ``tcp_port``), each on
the module's ``vpp`` and again on ``vpp_with_workers`` ("ct-workers", "tcp-workers"): each
module picks its own ports so modules never collide.

Tests that use any of these (directly or through other fixtures) get the ``vpp`` marker, so
``pytest -m vpp`` / ``-m "not vpp"`` select them.  When such a test fails, the tail of each
VPP's console and log is added to the report, and the apps VPP marks congested (which refuses
their connects: `pyvcl.testing.congestion`).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pyvcl.errors import VppUnreachable
from pyvcl.testing.congestion import congestion_report
from pyvcl.testing.vpp import VppInstall, VppInstance, find_vpp, why_missing
from pyvcl.wire.abi import check_live_layouts

if TYPE_CHECKING:
    from pyvcl.testing.netns import VethNamespace

__all__ = [
    "VppFactory",
    "vcl_stack_fixture",
    "vpp",
    "vpp_factory",
    "vpp_install",
    "vpp_netns",
    "vpp_options",
    "vpp_with_workers",
]

_VPP_FIXTURES = frozenset({"vpp_install", "vpp", "vpp_factory", "vpp_with_workers", "vpp_netns"})
WORKERS_VAR = "PYVCL_VPP_WORKERS"


class VppFactory:
    """Starts `VppInstance`s on demand (``factory(**kwargs)``) and stops them all at the end."""

    def __init__(self, install: VppInstall) -> None:
        self.install = install
        self.instances: list[VppInstance] = []

    def __call__(self, **kwargs: Any) -> VppInstance:
        inst = VppInstance(self.install, **kwargs)
        self.instances.append(inst)
        return inst.start()

    def stop_all(self) -> None:
        for inst in reversed(self.instances):
            inst.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "vpp: needs a real VPP (found through PYVCL_VPP_PREFIX or `vpp` on PATH); "
        "skipped otherwise",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _VPP_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.vpp)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.failed:
        return
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    instances: list[VppInstance] = []
    for value in funcargs.values():
        if isinstance(value, VppInstance):
            instances.append(value)
        elif isinstance(value, VppFactory):
            instances.extend(value.instances)
        elif isinstance(getattr(value, "vpp", None), VppInstance):  # a VclStack, say
            instances.append(value.vpp)
    for inst in dict.fromkeys(instances):
        state = "running" if inst.is_running() else f"exited, status {inst.returncode}"
        report.sections.append((f"VPP pid {inst.pid} ({state})", inst.log_tail(40)))
        marked = congestion_report(inst) if inst.is_running() else None
        if marked:
            report.sections.append((f"VPP pid {inst.pid}: apps marked congested", marked))


@pytest.fixture(scope="session")
def vpp_install() -> VppInstall:
    """The VPP install to test against; skips when there is none."""
    try:
        check_live_layouts()
    except VppUnreachable as e:
        pytest.skip(str(e.strerror))
    install = find_vpp()
    if install is None:
        pytest.skip(why_missing())
    return install


@pytest.fixture(scope="module")
def vpp_options() -> dict[str, Any]:
    """`VppInstance` keyword arguments for the module's ``vpp``; override in a module."""
    return {}


def default_workers() -> int:
    """VPP worker threads for the ``vpp`` fixture: ``$PYVCL_VPP_WORKERS`` (default 0), so the
    whole suite can run against a VPP whose sessions live on worker threads."""
    raw = os.environ.get(WORKERS_VAR, "").strip() or "0"
    if not raw.isdigit():
        raise pytest.UsageError(f"${WORKERS_VAR}={raw!r}: a number of worker threads")
    return int(raw)


@pytest.fixture(scope="module")
def vpp(vpp_install: VppInstall, vpp_options: dict[str, Any]) -> Iterator[VppInstance]:
    """A running private VPP shared by the module's tests (``$PYVCL_VPP_WORKERS`` workers
    unless the module's ``vpp_options`` say otherwise)."""
    with VppInstance(vpp_install, **{"workers": default_workers(), **vpp_options}) as inst:
        yield inst


@pytest.fixture(scope="module")
def vpp_with_workers(vpp_install: VppInstall) -> Iterator[VppInstance]:
    """A running private VPP with one worker thread (``cpu { workers 1 }``): sessions through
    its TCP stack live on the worker, control messages on the main thread."""
    with VppInstance(vpp_install, workers=1) as inst:
        yield inst


@pytest.fixture
def vpp_factory(vpp_install: VppInstall) -> Iterator[VppFactory]:
    """Start instances with custom arguments: ``vpp_factory(workers=1)``; all stopped after."""
    factory = VppFactory(vpp_install)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def vpp_netns(vpp: VppInstance) -> Iterator[VethNamespace]:
    """A network namespace of this test's own, joined to ``vpp`` by veth + af_packet (its
    address ``peer_addr``, VPP's ``vpp_addr`` in VPP's default table); skips when it cannot
    be built here; torn down after the test, also when it failed."""
    from pyvcl.testing.netns import VethNamespace, why_unavailable

    reason = why_unavailable(vpp)
    if reason is not None:
        pytest.skip(f"no test network namespace: {reason}")
    with VethNamespace(vpp) as ns:
        yield ns


def vcl_stack_fixture(ct_port: int, tcp_port: int) -> Any:
    """A module-scoped ``stack`` fixture over both topologies (see the module notes)."""
    from pyvcl.testing.conformance import VclStack

    params = [
        pytest.param(name, marks=pytest.mark.vpp)
        for name in ("ct", "tcp", "ct-workers", "tcp-workers")
    ]

    @pytest.fixture(scope="module", params=params)
    def stack(request: pytest.FixtureRequest) -> Iterator[VclStack]:
        topo, _, workers = request.param.partition("-")
        inst: VppInstance = request.getfixturevalue("vpp_with_workers" if workers else "vpp")
        if topo == "ct":
            s = VclStack(inst, "local", first_port=ct_port)
        else:
            s = VclStack(inst, "global", first_port=tcp_port)
        yield s
        s.close()

    return stack
