"""Check or re-record the tour's listings against a VPP.

    python tools/tour.py check  [--app-socket PATH] [CHAPTER.md ...]
    python tools/tour.py record [--app-socket PATH] CHAPTER.md ...

Without ``--app-socket`` a private VPP is started (``PYVCL_VPP_PREFIX`` or ``vpp`` on PATH,
as the tests find it), with the two-VRF TCP topology when a chapter needs VPP's TCP stack
(``<!-- tour: stack=tcp -->``); such chapters need that private VPP.  ``check`` prints
every difference and exits 1 if there is one; ``record`` rewrites the chapters' outputs
with what the run printed (read the diff before committing it: the text around the
listings must still be true).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from pyvcl.testing.tour import check_chapter, record_chapter, requirements

TOUR = Path(__file__).resolve().parent.parent / "docs" / "tour"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("check", "record"))
    ap.add_argument("chapters", nargs="*", type=Path)
    ap.add_argument("--app-socket", help="a running VPP's app socket (default: a private VPP)")
    args = ap.parse_intermixed_args()
    chapters = args.chapters or sorted(TOUR.glob("[0-9]*.md"))
    if args.mode == "record" and not args.chapters:
        ap.error("record needs the chapters to rewrite")
    needs_tcp = [ch for ch in chapters if requirements(ch.read_text())["stack"] == "tcp"]
    if args.app_socket is not None and needs_tcp:
        ap.error(f"{needs_tcp[0]} needs VPP's TCP stack: run it on a private VPP (no --app-socket)")
    with contextlib.ExitStack() as stack:
        sock, tcp = args.app_socket, None
        if sock is None:
            from pyvcl.testing.hoststack import two_vrf_topology
            from pyvcl.testing.vpp import VppInstance

            vpp = stack.enter_context(VppInstance())
            sock = str(vpp.app_socket())
            tcp = two_vrf_topology(vpp).two_vrf if needs_tcp else None
        failed = False
        for ch in chapters:
            if args.mode == "record":
                record_chapter(ch, sock, tcp)
                print(f"recorded {ch}")
            else:
                problems = check_chapter(ch, sock, tcp)
                failed |= bool(problems)
                print("\n\n".join(problems) if problems else f"{ch}: as printed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
