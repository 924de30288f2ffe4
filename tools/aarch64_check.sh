#!/usr/bin/env bash
# Check pyvcl's atomics on aarch64 without aarch64 hardware: run Debian bookworm's arm64 python3.11
# under qemu user-mode emulation (qemu-aarch64-static, no binfmt_misc, no chroot) and check that
# both backends (the aarch64 machine-code stubs and libatomic) pick and compute right, that
# attaching to a live VPP refuses (pyvcl/wire/abi.py: the declared layouts are VPP's x86-64 ones),
# and that tests/test_atomics.py passes (both backends as default).  See docs/atomics.md.
#
# Manual tool, not run by CI.  Needs root (debootstrap, apt-get), git, a host python3 with pip,
# and network access to a Debian mirror and to PyPI.  Installs qemu-user-static and debootstrap
# with apt-get if missing.  The host's dpkg state is not touched (no foreign architecture): the
# arm64 root comes from `debootstrap --foreign` (first stage only), whose downloaded .debs are
# then unpacked into it; nothing is configured and nothing runs in a chroot.
#
#   sudo tools/aarch64_check.sh            # create the root if absent, then check
#   sudo tools/aarch64_check.sh --rebuild  # delete and recreate the root first
#   sudo tools/aarch64_check.sh --keep     # keep the run's temp dir (copy, wheels, logs)
#
# Environment:
#   AARCH64ROOT     where the arm64 root lives (default /opt/arm64check)
#   AARCH64_MIRROR  Debian mirror for debootstrap (default: the first Debian archive in this
#                   machine's apt sources; the tool names none of its own)
#   TMPDIR          where the per-run temp dir pyvcl-aarch64.* goes (default /tmp)
#
# Writes only under $AARCH64ROOT and the per-run temp dir (removed at exit unless --keep): the
# checkout (tracked and untracked, not ignored, files) is copied there and run with
# PYTHONDONTWRITEBYTECODE=1 and pytest's cache off.  pytest and its pure-Python dependencies are
# wheels from the host's `pip download` (host pip configuration applies); what is checked here
# imports no numpy, construct or psutil.
# Exit status: 0 PASS, 1 FAIL, 2 could not run.

set -uo pipefail

ROOT=${AARCH64ROOT:-/opt/arm64check}
SUITE=bookworm
INCLUDE=python3.11-minimal,libpython3.11-stdlib,libffi8,libatomic1
WHEELS=(pytest pluggy iniconfig packaging pygments)
STAMP=$ROOT/.pyvcl-aarch64-ready
# shellcheck source=tools/_root_tool.sh
source "$(dirname "$0")/_root_tool.sh"  # REBUILD, KEEP, --help, die, apt_mirror
MIRROR=${AARCH64_MIRROR:-$(apt_mirror)} || die "no Debian mirror in this machine's apt sources: set AARCH64_MIRROR"

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, apt-get)"
case $ROOT in /?*) ;; *) die "AARCH64ROOT must be an absolute path other than /" ;; esac
command -v git >/dev/null || die "git not found"
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null) || die "not inside a git checkout"
[ -f "$REPO/pyproject.toml" ] || die "$REPO has no pyproject.toml"
python3 -m pip --version >/dev/null 2>&1 || die "host python3 has no pip (needed for pip download)"
need() {  # need COMMAND PACKAGE: apt-get install PACKAGE if COMMAND is missing
    command -v "$1" >/dev/null && return
    echo "== apt-get install $2 (no $1 on the host)"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$2"; } >/dev/null 2>&1
    command -v "$1" >/dev/null || die "$1 not found and apt-get install $2 failed"
}
need qemu-aarch64-static qemu-user-static
need debootstrap debootstrap
QEMU=$(command -v qemu-aarch64-static)

# The root: debootstrap's first stage downloads the packages and unpacks only the required set;
# unpack the rest (python3.11 and its libraries) the way debootstrap does, keeping the usr-merge
# symlinks.  Then shadow the host's dist-packages: qemu -L falls back to host paths absent from
# the root, which would put x86-64 packages on sys.path.

if [ "$REBUILD" = 1 ] && [ -e "$ROOT" ]; then
    echo "== removing $ROOT (--rebuild)"
    rm -rf --one-file-system "$ROOT"
fi
if [ ! -e "$STAMP" ]; then
    if [ -e "$ROOT" ] && [ -n "$(ls -A "$ROOT" 2>/dev/null)" ]; then
        die "$ROOT exists but was not completed by this script; rerun with --rebuild"
    fi
    echo "== debootstrap --arch=arm64 --foreign --variant=minbase --include=$INCLUDE $SUITE $ROOT $MIRROR"
    log=$(mktemp) || die "mktemp failed"
    debootstrap --arch=arm64 --foreign --variant=minbase --include="$INCLUDE" \
        "$SUITE" "$ROOT" "$MIRROR" >"$log" 2>&1 \
        || { tail -20 "$log"; rm -f "$log"; die "debootstrap failed (rerun with --rebuild)"; }
    mkdir -p "$ROOT/root" && mv "$log" "$ROOT/root/debootstrap.log"
    n=0
    for deb in "$ROOT"/var/cache/apt/archives/*.deb; do
        dpkg-deb --fsys-tarfile "$deb" | tar -C "$ROOT" --keep-directory-symlink -xf - \
            || die "unpacking $deb failed (rerun with --rebuild)"
        n=$((n + 1))
    done
    [ -x "$ROOT/usr/bin/python3.11" ] || die "no usr/bin/python3.11 after unpacking $n .debs"
    mkdir -p "$ROOT/usr/lib/python3/dist-packages" "$ROOT/usr/local/lib/python3.11/dist-packages"
    echo "$(date -u +%FT%TZ) $n packages" >"$STAMP"
fi

# One run: temp dir, copy of the checkout, pytest wheels, the qemu wrapper.

WORK=$(mktemp -d -t pyvcl-aarch64.XXXXXX) || die "mktemp failed"
# shellcheck disable=SC2317  # called through trap
cleanup() { if [ "$KEEP" = 1 ]; then echo "(kept $WORK)"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/src" "$WORK/site" "$WORK/wheels" "$WORK/bin" "$WORK/home" "$WORK/tmp"
git -C "$REPO" ls-files -z -co --exclude-standard \
    | (cd "$REPO" && tar -cf - --null --ignore-failed-read -T -) | tar -xf - -C "$WORK/src" \
    || die "copying the checkout failed"
python3 -m pip download -q -d "$WORK/wheels" --no-deps --only-binary=:all: --python-version 3.11 \
    "${WHEELS[@]}" >"$WORK/pip.log" 2>&1 || { tail -20 "$WORK/pip.log"; die "pip download failed"; }
python3 -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
    "$WORK/site" "$WORK"/wheels/*.whl || die "unzipping the wheels failed"
PY=$WORK/bin/python3.11
# argv[0] = this wrapper, so sys.executable re-enters qemu in subprocesses (no binfmt_misc).
{ printf '#!/bin/sh\nexec "%s" -L "%s" -0 "%s" "%s/usr/bin/python3.11" "$@"\n' \
    "$QEMU" "$ROOT" "$PY" "$ROOT" >"$PY" && chmod +x "$PY"; } || die "cannot write $PY"
RUN=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$WORK/home" LANG=C.UTF-8 TMPDIR="$WORK/tmp"
    PYTHONPATH="$WORK/site:$WORK/src" PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1)
cd "$WORK/src" || die "cd $WORK/src failed"

echo "== checkout $REPO ($(git -C "$REPO" describe --always --dirty 2>/dev/null)) -> $WORK/src"
echo "== root $ROOT (created $(cat "$STAMP")), $($QEMU --version | head -1)"
echo "== wheels: $(cd "$WORK/wheels" && echo *.whl)"

RESULTS=()
ok() { RESULTS+=("PASS $1: $2"); echo "PASS $1: $2"; }
bad() { RESULTS+=("FAIL $1: $2"); echo "FAIL $1: $2"; }

echo; echo "== interpreter"
got=$("${RUN[@]}" "$PY" -c 'import pkgutil, platform, sys
leaked = [m.name for m in pkgutil.iter_modules([p for p in sys.path if "dist-packages" in p])]
print(platform.machine(), sys.version.split()[0], "dist-packages:", leaked or "none")' 2>&1)
echo "$got"
if [[ $got == "aarch64 3.11."*" dist-packages: none" ]]; then ok machine "$got"; else bad machine "$got"; fi

echo; echo "== backend chosen"
for b in stub libatomic; do
    want=$([ $b = stub ] && echo stub-aarch64 || echo libatomic)
    got=$("${RUN[@]}" PYVCL_ATOMICS=$b "$PY" -c 'import pyvcl.atomics as a; print(a.backend_name())' 2>&1)
    if [ "$got" = "$want" ]; then ok "backend-$b" "PYVCL_ATOMICS=$b -> $got"; else bad "backend-$b" "PYVCL_ATOMICS=$b -> $got (want $want)"; fi
done

echo; echo "== every primitive, both backends"
"${RUN[@]}" "$PY" - >"$WORK/exercise.log" 2>&1 <<'PY'
import mmap, sys
from pyvcl import atomics
from pyvcl.atomics import AtomicRegion, backends
M32, M64, X = 2**32 - 1, 2**64 - 1, 0x8123456789ABCDEF
fails = 0
for ops in (backends._stub_ops(), backends._libatomic_ops()):
    atomics._OPS = ops
    mm = mmap.mmap(-1, 4096); r = AtomicRegion(mm)
    steps = [  # (call, its return, offset and size of the word to read back, the word then)
        ("store32", (0, 0xDEADBEEF), None, 0, 4, 0xDEADBEEF), ("load32", (0,), 0xDEADBEEF, 4, 4, 0),
        ("store32", (8, -1), None, 8, 4, M32), ("store64", (16, X), None, 16, 8, X),
        ("load64", (16,), X, 24, 8, 0), ("cas32", (8, M32, 5), M32, 8, 4, 5),
        ("cas32", (8, 4, 9), 5, 8, 4, 5), ("cas64", (16, X & M32, 0), X, 16, 8, X),
        ("cas64", (16, X, -1), X, 16, 8, M64), ("cas64", (16, -1, 1 << 63), M64, 16, 8, 1 << 63),
        ("xchg32", (8, 0xCAFEBABE), 5, 8, 4, 0xCAFEBABE),
        ("fetch_add32", (8, 2**32 - 0xCAFEBABE), 0xCAFEBABE, 8, 4, 0),
        ("fetch_sub32", (8, 1), 0, 8, 4, M32), ("fetch_add32", (8, -1), M32, 8, 4, M32 - 1),
        ("fetch_sub32", (8, -3), M32 - 1, 8, 4, 1), ("store64", (16, M64), None, 16, 8, M64),
        ("fetch_add64", (16, 3), M64, 16, 8, 2), ("fetch_sub64", (16, 3), 2, 16, 8, M64),
        ("store64", (16, M32), None, 16, 8, M32), ("fetch_add64", (16, 1), M32, 16, 8, 1 << 32),
        ("fetch_sub64", (16, 1), 1 << 32, 16, 8, M32), ("store32", (32, 0x0F0F0000), None, 36, 4, 0),
        ("fetch_or32", (32, 0x80000001), 0x0F0F0000, 32, 4, 0x8F0F0001),
        ("fetch_and32", (32, 0xF00000FF), 0x8F0F0001, 32, 4, 0x80000001),
    ]
    for name, args, ret, off, size, mem in steps:
        got = (getattr(r, name)(*args), int.from_bytes(mm[off:off + size], "little"))
        if got != (ret, mem):
            fails += 1; print(f"FAIL {ops.name} {name}{args}: got {got}, want {(ret, mem)}")
    print(f"{ops.name}: {len(steps)} steps checked"); r.close(); mm.close()
sys.exit(1 if fails else 0)
PY
rc=$?
cat "$WORK/exercise.log"
if [ $rc = 0 ]; then ok primitives "$(grep -c 'steps checked' "$WORK/exercise.log") backends, every step right"; else bad primitives "exit $rc"; fi

echo; echo "== attach refuses (pyvcl/wire/abi.py: the layouts are VPP's x86-64 ones)"
got=$("${RUN[@]}" "$PY" - "$WORK/no-such-vpp.sock" 2>&1 <<'PY'
import errno, sys
from pyvcl.app import App
from pyvcl.errors import VppUnreachable
from pyvcl.wire.abi import check_live_layouts
for what, call in (("check_live_layouts()", check_live_layouts), ("App.attach()", lambda: App.attach(sys.argv[1]))):
    try:
        call(); print(what, "returned")
    except VppUnreachable as e:
        print(what, "VppUnreachable", errno.errorcode.get(e.errno, e.errno), e)
PY
)
echo "$got"
if [ "$(grep -c ' VppUnreachable ENOSYS ' <<<"$got")" = 2 ]; then
    ok attach-refused "check_live_layouts() and App.attach() raise VppUnreachable ENOSYS"
else bad attach-refused "want VppUnreachable ENOSYS from both, see above"; fi

# The dead-owner tests need the kernel's robust futex list, and qemu-user answers
# set_robust_list with ENOSYS: a mutex whose owner died is never handed over (EOWNERDEAD), it
# just stays locked.  That is qemu, not pyvcl, so they are deselected here.
DESELECT=(--deselect tests/test_atomics.py::test_robust_recovery_from_dead_owner
    --deselect tests/test_atomics.py::test_not_recoverable_is_remote_error
    --deselect tests/test_atomics.py::test_cond_wait_recovers_from_dead_owner)
for b in default stub; do
    echo; echo "== pytest tests/test_atomics.py, PYVCL_ATOMICS=${b/default/(unset)} (dead-owner tests deselected)"
    envb=(); [ $b = stub ] && envb=(PYVCL_ATOMICS=stub)
    timeout 1800 "${RUN[@]}" "${envb[@]}" "$PY" -m pytest -q -p no:cacheprovider \
        -o faulthandler_timeout=300 "${DESELECT[@]}" tests/test_atomics.py >"$WORK/pytest-$b.log" 2>&1
    rc=$?
    grep -E '^(SKIPPED|FAILED|ERROR)' "$WORK/pytest-$b.log"
    summary=$(tail -1 "$WORK/pytest-$b.log")
    echo "$summary"
    if [ $rc = 0 ]; then ok "pytest-$b" "$summary"; else tail -40 "$WORK/pytest-$b.log"; bad "pytest-$b" "exit $rc: $summary"; fi
done

echo
echo "================ aarch64 check: summary ================"
printf '%s\n' "${RESULTS[@]}"
if printf '%s\n' "${RESULTS[@]}" | grep -q '^FAIL'; then echo "RESULT: FAIL"; exit 1; fi
echo "RESULT: PASS"
exit 0
