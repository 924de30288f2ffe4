"""Download one URL with urllib, again and again, checking each copy's sha256.

    python http_get.py URL SHA256 SECONDS

Downloads until SECONDS have passed and at least `MIN_DOWNLOADS` were made (at most
`MAX_DOWNLOADS`), each with ``urllib.request.urlopen(URL).read()`` -- a new connection each
time, as ``python -m http.server`` closes after every response.  The download is timed; the
hash is taken after the clock stopped, and a wrong one is an error (exit status 1).  Prints one
JSON line: the median and best MB/s (10**6 bytes) and the seconds of the downloads.

Standard library only: the same file runs under plain Python, under LDP and under
``pyvcl run``.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
import urllib.request

MIN_DOWNLOADS = 3
MAX_DOWNLOADS = 100
TIMEOUT_S = 120.0


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    url, want, seconds = argv[0], argv[1].lower(), float(argv[2])
    times: list[float] = []
    size = 0
    t_start = time.perf_counter()
    while len(times) < MAX_DOWNLOADS and (
        len(times) < MIN_DOWNLOADS or time.perf_counter() - t_start < seconds
    ):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            data = resp.read()
        times.append(time.perf_counter() - t0)
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            print(f"download {len(times)}: {len(data)} bytes, sha256 {got} != {want}",
                  file=sys.stderr)  # fmt: skip
            return 1
        size = len(data)
    med = statistics.median(times)
    print(
        json.dumps(
            {
                "mb_per_s": round(size / med / 1e6, 2),
                "mb_per_s_best": round(size / min(times) / 1e6, 2),
                "seconds_median": round(med, 5),
                "bytes": size,
                "downloads": len(times),
                "sha256_ok": True,
                "seconds_min": round(min(times), 5),
                "seconds_max": round(max(times), 5),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
