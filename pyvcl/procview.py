"""The VCL state of a running process, read from outside: ``pyvcl inspect PID``.

Any VCL application -- C VCL, a program under LDP, pyvcl -- keeps its segments' memfds open,
so another process with the right to look (the same user, or root) can map them through
``/proc/PID/fd/N``.  They are mapped read-only: nothing here writes to a segment or takes one
of its locks, so what a live process shows is a racy but faithful picture, like `pyvcl.shmview`
gives of a snapshot.  The decoding is `pyvcl.shmview`'s; this module finds what to decode:

- **segments**: the process's descriptors that name a memfd and start with a valid fifo
  segment header (``/memfd:session: wrk-mqs-segment`` holds VPP's worker queues; the app's
  own segments are named by VPP, e.g. ``seg-2-2-8``).  Descriptors of one memfd count once.
- **message queues**: VPP's worker queues sit at equal strides after the slices
  (`pyvcl.shmview.discover_vpp_mqs`).  The app's own queue was placed by VPP's allocator in
  the app's first segment and only the attach reply said where, so it is found by a scan of
  the segment's allocated bytes (numpy, every 8-byte aligned place whose words look like an
  ``svm_msg_q`` header), each candidate then decoded in full and kept only if it holds up.
- **fifos**: those named by the control events still in the queues' rings (ACCEPTED,
  CONNECTED... keep their slot until the ring wraps over it).  The event names the fifo's
  segment by a handle that only the app knows, so each segment is tried and the one where
  the fifo header and its chunk chain check out is taken.

Everything read is hostile input: the decoders bound every walk and report what does not
hold up under ``problems`` instead of raising, except for a segment header that is not one.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import shmview as decode
from .errors import LocalError, SharedMemoryError
from .segment import Segment
from .wire.mq import SVM_MSG_Q_MSG, SVM_MSG_Q_SHARED, SVM_MSG_Q_SHARED_QUEUE

__all__ = ["ProcessView", "describe_process"]

_MEMFD = "/memfd:"
_VPP_MQ_SEGMENT = "wrk-mqs-segment"  # the memfd name of VPP's worker-queue segment
_VPP_MAIN = "vpp_main"  # the name of VPP's main thread, so of the VPP process
_PAGE = mmap.PAGESIZE
_Q = SVM_MSG_Q_SHARED.size  # the queue header follows the mq header
_MAX_QUEUE = 1 << 20  # a larger maxsize is not a plausible message queue
_MQ_ALIGN = 8


@dataclass
class _Mapped:
    fd: int  # the descriptor number in the inspected process
    name: str
    inode: int
    segment: Segment
    mqs: list[int] = field(default_factory=list)  # fsh offsets of the mqs found in it
    role: str = "app"  # "vpp": VPP's worker queues; "app": the app's own segments


class ProcessView:
    """The segments of process ``pid``, mapped read-only, and what they hold.

    Raises `LocalError` with ESRCH when there is no such process and EACCES when its
    descriptors cannot be read.  `refresh` maps segments that appeared since; `close` unmaps
    everything (also on ``with``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.skipped: list[dict[str, Any]] = []
        self._segments: dict[int, _Mapped] = {}  # by memfd inode
        self.refresh()

    def __enter__(self) -> ProcessView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for m in self._segments.values():
            buf = m.segment.buf
            m.segment.close()
            buf.close()
        self._segments.clear()

    @property
    def command(self) -> str:
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return ""

    def refresh(self) -> None:
        """Map the VCL segments among the process's descriptors not mapped yet."""
        base = f"/proc/{self.pid}/fd"
        try:
            fds = sorted(os.listdir(base), key=int)
        except FileNotFoundError:
            raise LocalError(f"no process {self.pid}", errno.ESRCH) from None
        except PermissionError:
            raise LocalError(
                f"cannot read the descriptors of process {self.pid}: permission denied (run "
                "as its user or as root)",
                errno.EACCES,
            ) from None
        self.skipped = []
        for fd in fds:
            path = f"{base}/{fd}"
            try:
                target = os.readlink(path)
            except OSError:
                continue  # closed meanwhile
            if not target.startswith(_MEMFD):
                continue
            name = target[len(_MEMFD) :].removesuffix(" (deleted)")
            try:
                self._map(int(fd), path, name)
            except PermissionError:
                raise LocalError(
                    f"cannot open {path} ({name}): permission denied (run as the process's "
                    "user or as root)",
                    errno.EACCES,
                ) from None
            except (OSError, SharedMemoryError) as e:
                self.skipped.append({"fd": int(fd), "name": name, "why": str(e)})

    def _map(self, fd: int, path: str, name: str) -> None:
        f = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(f)
            if st.st_ino in self._segments or not stat.S_ISREG(st.st_mode):
                return
            if st.st_size < _PAGE:
                raise SharedMemoryError(f"memfd {name!r} is only {st.st_size} bytes")
            # The whole memfd, read-only: the header's own size field is checked by Segment.
            mm = mmap.mmap(f, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(f)
        try:
            seg = Segment(mm, name=name)
        except BaseException:
            mm.close()
            raise
        m = _Mapped(fd, name, st.st_ino, seg)
        if name.endswith(_VPP_MQ_SEGMENT):
            m.role = "vpp"
            m.mqs = decode.discover_vpp_mqs(seg)
        else:
            m.mqs = find_mqs(seg)
        self._segments[st.st_ino] = m

    @property
    def segments(self) -> list[_Mapped]:
        return sorted(self._segments.values(), key=lambda m: m.fd)

    def describe(self, *, peek: int = 0) -> dict[str, Any]:
        """Plain data (``json.dumps``-ready): segments, queues with their pending events,
        fifos named by the queues' events."""
        segs = self.segments
        out: dict[str, Any] = {"pid": self.pid, "command": self.command, "segments": []}
        mqs: list[dict[str, Any]] = []
        for m in segs:
            d = decode.guarded(decode.describe_segment, m.segment)
            out["segments"].append({"fd": m.fd, "name": m.name, "role": m.role, **_brief(d)})
            for off in m.mqs:
                mq = decode.guarded(decode.describe_mq, m.segment, off)
                mqs.append({"segment": m.name, "role": m.role, **_mq_summary(mq), "detail": mq})
        out["mqs"] = mqs
        out["fifos"] = self._fifos(mqs, peek)
        out["skipped"] = self.skipped
        return out

    def _fifos(self, mqs: list[dict[str, Any]], peek: int) -> list[dict[str, Any]]:
        found: dict[tuple[str, int], dict[str, Any]] = {}
        app_segments = [m for m in self.segments if m.role == "app"]
        for mq in mqs:
            detail = mq["detail"]
            if "rings" not in detail:
                continue
            for ref in decode.fifo_refs(detail):
                for m in app_segments:
                    key = (m.name, int(ref["fifo"]))
                    if key in found:
                        found[key]["named_by"].append(_ref_brief(ref))
                        break
                    try:
                        f = decode.describe_fifo(m.segment, int(ref["fifo"]), peek=peek)
                    except SharedMemoryError:
                        continue
                    if not _plausible(f):
                        continue
                    found[key] = {
                        "segment": m.name,
                        "session_handle": ref["session_handle"],
                        "segment_handle": ref["segment_handle"],
                        "role": ref["field"],
                        **_fifo_summary(f),
                        "named_by": [_ref_brief(ref)],
                        "detail": f,
                    }
                    break
        return list(found.values())


def find_mqs(seg: Segment) -> list[int]:
    """Fsh offsets of the message queues in a segment's allocated bytes (see the module's
    docstring): a numpy pass over every aligned place, then `pyvcl.shmview.describe_mq` on
    each candidate, kept when it decodes with no problem and its rings look like the
    session layer's."""
    h = seg.fifo_header()
    start = int(h.start_byte_index)
    end = min(int(h.byte_index), seg.size - seg.fsh)
    if end - start < _Q + SVM_MSG_Q_SHARED_QUEUE.size:
        return []
    lo = seg.fsh + start
    lo += -lo % _MQ_ALIGN
    n = (seg.fsh + end - lo) // 4
    words = np.frombuffer(seg.buf, dtype="<u4", count=n, offset=lo)
    q = _Q // 4
    span = q + SVM_MSG_Q_SHARED_QUEUE.size // 4
    if n <= span:
        return []
    heads = np.arange(0, n - span, _MQ_ALIGN // 4)
    w = {k: words[heads + q + SVM_MSG_Q_SHARED_QUEUE.offset(k) // 4] for k in _QUEUE_WORDS}
    n_rings = words[heads]
    maybe = (
        (n_rings >= 1)
        & (n_rings <= decode.MAX_RINGS)
        & (w["elsize"] == SVM_MSG_Q_MSG.size)
        & (w["maxsize"] >= 1)
        & (w["maxsize"] <= _MAX_QUEUE)
        & (w["head"] < w["maxsize"])
        & (w["tail"] < w["maxsize"])
        & (w["cursize"] <= w["maxsize"])
    )
    out = []
    for i in heads[maybe]:
        off = lo + int(i) * 4 - seg.fsh
        try:
            mq = decode.describe_mq(seg, off)
        except SharedMemoryError:
            continue
        rings = mq["rings"]
        if mq["problems"] or len(rings) != mq["n_rings"] or not all(r["nitems"] for r in rings):
            continue
        out.append(off)
    return out


_QUEUE_WORDS = ("head", "tail", "cursize", "maxsize", "elsize")


def vcl_processes() -> list[dict[str, Any]]:
    """The VCL applications on this machine that this user may look into: the processes that
    map VPP's worker-queue segment (every attached app does), VPP itself left out (it made
    the segment: its main thread is ``vpp_main``).  ``pid``, ``name`` and ``command`` each,
    by pid.  Found with psutil, which reads each process's mappings; the processes it may
    not read are left out."""
    import psutil  # (here: only this listing needs it)

    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if proc.info["name"] == _VPP_MAIN:
                continue
            maps = proc.memory_maps(grouped=True)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if any(m.path.startswith(_MEMFD) and _VPP_MQ_SEGMENT in m.path for m in maps):
            found.append(
                {
                    "pid": proc.info["pid"],
                    "name": proc.info["name"] or "",
                    "command": " ".join(proc.info["cmdline"] or []),
                }
            )
    return sorted(found, key=lambda p: int(p["pid"]))


def describe_process(pid: int, *, peek: int = 0) -> dict[str, Any]:
    """`ProcessView.describe` of ``pid``, once."""
    with ProcessView(pid) as view:
        return view.describe(peek=peek)


# -- summaries -------------------------------------------------------------------------------


def _brief(seg: dict[str, Any]) -> dict[str, Any]:
    if "error" in seg:
        return seg
    fsh = seg["fsh"]
    return {
        "size": seg["size"],
        "free_bytes": seg["free_bytes"],
        "active_fifos": fsh["n_active_fifos"],
        "n_slices": fsh["n_slices"],
        "problems": seg["problems"],
    }


def _mq_summary(mq: dict[str, Any]) -> dict[str, Any]:
    if "error" in mq:
        return {"fsh_offset": None, "queued": None, "capacity": None, "pending": []}
    q = mq["queue"]
    slots = {(r["index"], s["elt"]): s for r in mq["rings"] for s in r["slots"]}
    pending = []
    for h in q["pending_handles"]:
        slot = slots.get((h["ring_index"], h["elt_index"]))
        pending.append(
            slot if slot is not None else {"ring": h["ring_index"], "elt": h["elt_index"]}
        )
    return {
        "fsh_offset": mq["fsh_offset"],
        "queued": q["cursize"],
        "capacity": q["maxsize"],
        "pending": pending,
        "problems": mq["problems"],
    }


def _plausible(f: dict[str, Any]) -> bool:
    """Whether a decoded fifo header is a fifo in use: consistent, sized, with chunks, not
    on its slice's free list (zeroed or recycled memory at the offset passes the checks of
    `pyvcl.shmview.describe_fifo` otherwise)."""
    return bool(
        f["ok"] and f["size"] and f["min_alloc"] and f["chunks"] and not f["on_free_fifo_list"]
    )


def _fifo_summary(f: dict[str, Any]) -> dict[str, Any]:
    return {
        "fsh_offset": f["fsh_offset"],
        "size": f["size"],
        "unread": f["bytes_present"],
        "head": f["head"],
        "tail": f["tail"],
        "chunks": len(f["chunks"]),
        "has_event": f.get("has_event"),
        "want_deq_ntf": f.get("want_deq_ntf"),
    }


def _ref_brief(ref: dict[str, Any]) -> dict[str, Any]:
    return {k: ref[k] for k in ("event", "ring", "elt", "live")}
