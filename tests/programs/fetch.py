"""Download one URL with urllib and print its length and sha256 (one JSON line).

    python fetch.py URL

Standard library only: an unmodified program, run under ``pyvcl run`` by the tests.
"""

import hashlib
import json
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=60) as resp:
    data = resp.read()
print(json.dumps({"status": resp.status, "bytes": len(data),
                  "sha256": hashlib.sha256(data).hexdigest()}))  # fmt: skip
