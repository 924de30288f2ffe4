"""Check or re-record the tour's listings against a VPP.

    python tools/tour.py check  [--app-socket PATH] [CHAPTER.md ...]
    python tools/tour.py record [--app-socket PATH] CHAPTER.md ...

Without ``--app-socket`` a private VPP is started (``PYVCL_VPP_PREFIX`` or ``vpp`` on PATH,
as the tests find it).  ``check`` prints every difference and exits 1 if there is one;
``record`` rewrites the chapters' outputs with what the run printed (read the diff before
committing it: the text around the listings must still be true).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from pyvcl.testing.tour import check_chapter, record_chapter

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
    with contextlib.ExitStack() as stack:
        sock = args.app_socket
        if sock is None:
            from pyvcl.testing.vpp import VppInstance

            sock = str(stack.enter_context(VppInstance()).app_socket())
        failed = False
        for ch in chapters:
            if args.mode == "record":
                record_chapter(ch, sock)
                print(f"recorded {ch}")
            else:
                problems = check_chapter(ch, sock)
                failed |= bool(problems)
                print("\n\n".join(problems) if problems else f"{ch}: as printed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
