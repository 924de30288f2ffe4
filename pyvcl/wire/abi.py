"""The machine ABI that VPP's shared-memory layouts depend on.

VPP and its apps share memory on one machine, so VPP's layouts are those of the machine we run
on.  Two things in them depend on the machine:

* ``CLIB_CACHE_LINE_ALIGN_MARK`` paddings (fifo segment header and slices, svm fifos): VPP
  builds with 64-byte cache lines on x86-64 and **128-byte** ones on aarch64
  (``src/cmake/cpu.cmake``, ``VPP_CACHE_LINE_SIZE``);
* glibc's ``pthread_mutex_t`` at the start of every message-queue header
  (``svm_msg_q_shared_queue_t``): 40 bytes on x86-64, **48** on aarch64
  (``__SIZEOF_PTHREAD_MUTEX_T``), which moves the condvar and the queue indices after it.

The declarations in this package are VPP's x86-64 layouts (the ground truth in
``shared/vpp-v26.06/layouts.json`` comes from an x86-64 build).  Decoding recorded x86-64
snapshots and traces works anywhere; attaching to a live VPP needs `check_live_layouts`.
"""

from __future__ import annotations

import errno
import platform

from pyvcl.errors import VppUnreachable

MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}.get(
    platform.machine().lower(), platform.machine().lower()
)

# Machines whose VPP shared-memory layouts the declarations here are.
LAYOUT_MACHINES = ("x86_64",)

# glibc sizeof(pthread_mutex_t) / sizeof(pthread_cond_t) by machine.
PTHREAD_MUTEX_SIZES = {"x86_64": 40, "aarch64": 48}
PTHREAD_COND_SIZE = 48


def check_live_layouts(machine: str | None = None) -> None:
    """Raise `VppUnreachable` (ENOSYS) when VPP's shared memory on ``machine`` (default: this
    one) is not laid out as declared, before anything is mapped: reading it with the x86-64
    layouts would misplace every field after the first cache-line mark or mutex.  It is a
    `VppUnreachable` so that opportunistic use (`pyvcl.fallback.open_app`, the drop-in
    module) falls back to kernel sockets and says why."""
    machine = MACHINE if machine is None else machine
    if machine not in LAYOUT_MACHINES:
        raise VppUnreachable(
            f"pyvcl knows VPP's shared-memory layouts on {', '.join(LAYOUT_MACHINES)} only, "
            f"not on {machine} (VPP there has other cache-line paddings and mutex sizes; see "
            "pyvcl/wire/abi.py)",
            errno.ENOSYS,
        )
