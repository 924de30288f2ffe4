#!/usr/bin/env bash
# Prove that `pip install pyvcl` needs no compiler and no libatomic1: install the current checkout
# into a minimal Debian bookworm root (debootstrap --variant=minbase + python3 + python3-venv, no
# recommends), check there is no libatomic and no compiler in it, and run the no-VPP tests that
# exercise the atomics there.  See docs/atomics.md for why and for the last recorded result.
#
# Manual tool, not run by CI.  Needs root (chroot, mount), debootstrap on the host
# (`apt-get install debootstrap`), git, and network access to a Debian mirror and to PyPI.
#
#   sudo tools/clean_env_check.sh            # create the root if absent, then check
#   sudo tools/clean_env_check.sh --rebuild  # delete and recreate the root first
#   sudo tools/clean_env_check.sh --keep     # keep the run's temp dir (logs, venv, pip report)
#
# Environment:
#   CLEANROOT            where the root lives (default /opt/cleanroot)
#   CLEANROOT_MIRROR     Debian mirror for debootstrap (default: the first Debian archive in this
#                        machine's apt sources; the tool names none of its own)
#   CLEANROOT_CA_BUNDLE  CA bundle for pip inside the root (default: $PIP_CERT if set).  Only for
#                        networks whose TLS is intercepted by a proxy with its own CA; it is
#                        passed as PIP_CERT for this run and not installed into the root.
#   PYVCL_SHARED_DIR     ground-truth data (default ../shared beside the checkout, if present);
#                        bind-mounted read-only so the data tests run instead of skipping.
#
# Writes only under $CLEANROOT (the root itself, and a per-run temp dir $CLEANROOT/tmp/pyvcl-
# check.* removed at exit unless --keep), plus debootstrap's log in a mktemp file while the root
# is being created (then moved to $CLEANROOT/root/).  The checkout is copied in (tracked and untracked, not
# ignored, files: uncommitted work is what gets tested), never mounted.  pip runs with a clean
# environment (env -i): no host pip configuration, local indexes or find-links reach it.
# Exit status: 0 PASS, 1 FAIL, 2 could not run.

set -uo pipefail

ROOT=${CLEANROOT:-/opt/cleanroot}
SUITE=bookworm
STAMP=$ROOT/.pyvcl-cleanroot-ready
# shellcheck source=tools/_root_tool.sh
source "$(dirname "$0")/_root_tool.sh"  # REBUILD, KEEP, --help, die, apt_mirror
MIRROR=${CLEANROOT_MIRROR:-$(apt_mirror)} || die "no Debian mirror in this machine's apt sources: set CLEANROOT_MIRROR"

[ "$(id -u)" = 0 ] || die "must run as root (chroot, mount, debootstrap)"
case $ROOT in /*) ;; *) die "CLEANROOT must be an absolute path" ;; esac
[ "$ROOT" != / ] || die "CLEANROOT=/ refused"
command -v git >/dev/null || die "git not found"
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null) || die "not inside a git checkout"
[ -f "$REPO/pyproject.toml" ] || die "$REPO has no pyproject.toml"
SHARED=${PYVCL_SHARED_DIR:-$REPO/../shared}
[ -d "$SHARED" ] && SHARED=$(cd "$SHARED" && pwd) || SHARED=
CA=${CLEANROOT_CA_BUNDLE:-${PIP_CERT:-}}

mounted_under() { findmnt -rn -o TARGET | awk -v r="$ROOT" 'index($0, r "/") == 1'; }

# ---------------------------------------------------------------------------------------------
# The root: debootstrap minbase + python3 + python3-venv, once.

if [ "$REBUILD" = 1 ] && [ -e "$ROOT" ]; then
    [ -z "$(mounted_under)" ] || die "something is mounted under $ROOT; unmount it first"
    echo "== removing $ROOT (--rebuild)"
    rm -rf --one-file-system "$ROOT"
fi
if [ ! -e "$STAMP" ]; then
    if [ -e "$ROOT" ] && [ -n "$(ls -A "$ROOT" 2>/dev/null)" ]; then
        die "$ROOT exists but was not completed by this script; rerun with --rebuild"
    fi
    command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
    echo "== debootstrap --variant=minbase $SUITE $ROOT $MIRROR"
    log=$(mktemp) || die "mktemp failed"
    debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$log" 2>&1 \
        || { tail -20 "$log"; rm -f "$log"; die "debootstrap failed (rerun with --rebuild)"; }
    mv "$log" "$ROOT/root/debootstrap.log"
    echo "== apt-get install --no-install-recommends python3 python3-venv (in the root)"
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive sh -c \
        'apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-venv \
         && apt-get clean' >"$ROOT/root/apt.log" 2>&1 \
        || { tail -20 "$ROOT/root/apt.log"; die "apt-get in the root failed"; }
    date -u +%FT%TZ >"$STAMP"
fi

# ---------------------------------------------------------------------------------------------
# One run: temp dir, mounts (undone at exit), copy of the checkout.

exec 9>"$ROOT/.pyvcl-check.lock"
flock -n 9 || die "another clean_env_check is running on $ROOT"
[ -z "$(mounted_under)" ] || die "something is already mounted under $ROOT (stale run?): $(mounted_under | tr '\n' ' ')"

WORK=$(mktemp -d "$ROOT/tmp/pyvcl-check.XXXXXX") || die "mktemp failed"
IN=${WORK#"$ROOT"}  # the same dir as seen from inside the root
MOUNTS=()
# shellcheck disable=SC2317  # called through trap
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}" || umount -l "${MOUNTS[i]}"; done
    if [ -n "$(mounted_under)" ]; then
        # A bind mount of the same file system would not stop rm --one-file-system: keep it all.
        echo "clean_env_check: still mounted under $ROOT, not removing $WORK: $(mounted_under)" >&2
    elif [ "$KEEP" = 1 ]; then
        echo "(kept $WORK)"
    else
        rm -rf --one-file-system "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bind() {  # bind SRC DST [ro]
    if ! { mkdir -p "$2" && mount --bind "$1" "$2"; }; then die "mount --bind $1 $2 failed"; fi
    MOUNTS+=("$2")
    if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2" || die "read-only remount of $2 failed"; fi
}
mount -t proc proc "$ROOT/proc" || die "mount proc failed"
MOUNTS+=("$ROOT/proc")
bind /dev "$ROOT/dev"
bind /dev/shm "$ROOT/dev/shm"

mkdir -p "$WORK/src" "$WORK/testrun" "$WORK/tmp"
git -C "$REPO" ls-files -z -co --exclude-standard \
    | (cd "$REPO" && tar -cf - --null --ignore-failed-read -T -) | tar -xf - -C "$WORK/src" \
    || die "copying the checkout failed"
# The tests run from a copy holding only tests/ and pyproject.toml (pytest configuration), so
# `import pyvcl` can only find the installed wheel, never the copied source tree.
cp -a "$WORK/src/tests" "$WORK/src/pyproject.toml" "$WORK/testrun/"
ENVS=(HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 WORK="$IN" TMPDIR="$IN/tmp")
if [ -n "$SHARED" ]; then
    bind "$SHARED" "$WORK/shared" ro
    ENVS+=(PYVCL_SHARED_DIR="$IN/shared")
fi
if [ -n "$CA" ]; then
    cp "$CA" "$WORK/ca.pem" || die "cannot read CA bundle $CA"
    ENVS+=(PIP_CERT="$IN/ca.pem")
fi
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -n "${!v:-}" ] && ENVS+=("$v=${!v}")
done

# ---------------------------------------------------------------------------------------------
# The checks, inside the root.  Each writes "PASS|FAIL name: detail" to results.txt.

cat >"$WORK/check.sh" <<'INNER'
set -u
cd "$WORK"
R=$WORK/results.txt
: >"$R"
ok() { echo "PASS $1: $2" >>"$R"; }
bad() { echo "FAIL $1: $2" >>"$R"; }
section() { printf '\n== %s\n' "$1"; }

section "system"
. /etc/os-release; echo "$PRETTY_NAME, $(uname -m), kernel $(uname -r), $(python3 --version)"
echo "$(dpkg -l | grep -c '^ii') packages installed"

section "ldconfig -p | grep atomic"
ldconfig -p | grep atomic
section "dpkg -l | grep -E 'libatomic|gcc'"
dpkg -l | grep -E 'libatomic|gcc'
section "find / -xdev -name 'libatomic*'"
found=$(find / -xdev -name 'libatomic*' -not -path "$WORK/*" 2>/dev/null)
[ -z "$found" ] || echo "$found"
if [ -z "$(ldconfig -p | grep atomic)" ] && [ -z "$found" ] \
    && ! dpkg -l 'libatomic*' 2>/dev/null | grep -q '^ii'; then
    ok no-libatomic "not in the ld cache, not on disk, no libatomic* package"
else
    bad no-libatomic "libatomic present"
fi
section "compilers on PATH"
cc_found=
for c in cc gcc c++ g++ clang tcc ld as cpp; do
    command -v "$c" && cc_found="$cc_found $c"
done
if [ -z "$cc_found" ]; then ok no-compiler "none of cc gcc c++ g++ clang tcc ld as cpp"; else bad no-compiler "found:$cc_found"; fi

section "python3 -m venv $WORK/venv"
python3 -m venv "$WORK/venv" && "$WORK/venv/bin/pip" --version

section "pip install --no-cache-dir '$WORK/src[test]'"
"$WORK/venv/bin/pip" install --no-cache-dir --report "$WORK/pip-report.json" "$WORK/src[test]" \
    >"$WORK/pip.log" 2>&1
rc=$?
grep -E '^(Collecting|  Downloading|  Building|  Created wheel|Successfully|ERROR)' "$WORK/pip.log" \
    | grep -v 'Downloading.*\.metadata'
if [ $rc = 0 ]; then
    read -r n sdists < <("$WORK/venv/bin/python" - "$WORK/pip-report.json" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))["install"]
sdists = [i["metadata"]["name"] + "==" + i["metadata"]["version"] for i in items
          if not i.get("is_direct") and not i["download_info"]["url"].endswith(".whl")]
print(len(items), " ".join(sdists))
PY
)
    built=$(grep -oE 'Building wheel for [^ ]+' "$WORK/pip.log" | awk '{print $4}' | sort -u | tr '\n' ' ')
    wheel=$(grep -oE 'filename=pyvcl-[^ ]+\.whl' "$WORK/pip.log")
    if [ -z "$sdists" ] && [ "$built" = "pyvcl " ] && [[ $wheel == *-py3-none-any.whl ]]; then
        ok pip-install "$n distributions; all dependencies from wheels; only pyvcl itself built (${wheel#filename=})"
    else
        bad pip-install "sdists: [${sdists}] built: [${built}] pyvcl wheel: [${wheel}]"
    fi
else
    tail -30 "$WORK/pip.log"
    bad pip-install "pip exited $rc (log: $WORK/pip.log)"
fi

PY=$WORK/venv/bin/python
cd "$WORK/testrun"
section "python -c 'import pyvcl.atomics as a; print(a.backend_name())'"
where=$("$PY" -c 'import pyvcl; print(pyvcl.__file__)' 2>&1)
name=$("$PY" -c 'import pyvcl.atomics as a; print(a.backend_name())' 2>&1)
echo "$name   (pyvcl from $where)"
want=stub-$(uname -m)
if [ "$name" = "$want" ] && [[ $where == "$WORK/venv/"* ]]; then
    ok backend "$name, from the installed wheel"
else
    bad backend "got '$name' (want '$want') from '$where'"
fi

section "PYVCL_ATOMICS=libatomic python -c '...backend_name(); AtomicRegion(...)'"
# Forcing the backend that is missing must not fall back to the stub: the import still works,
# backend_name() says "unavailable", and the first AtomicRegion raises VclError(ENOSYS) whose
# message names the package to install.
forced=$(PYVCL_ATOMICS=libatomic "$PY" - 2>&1 <<'PY'
import errno, mmap
import pyvcl.atomics as a
from pyvcl.errors import VclError
print(a.backend_name())
try:
    a.AtomicRegion(mmap.mmap(-1, 4096))
    print("AtomicRegion: no error")
except VclError as e:
    print("AtomicRegion: VclError", errno.errorcode.get(e.errno, e.errno), e)
PY
)
echo "$forced"
read -r fname <<<"$forced"
ferr=$(grep -m1 '^AtomicRegion:' <<<"$forced")
if [ "$fname" = unavailable ] && [[ $ferr == "AtomicRegion: VclError ENOSYS "*libatomic1* ]]; then
    ok forced-libatomic "unavailable, AtomicRegion raises VclError ENOSYS naming libatomic1"
else
    bad forced-libatomic "got '$fname'; ${ferr:-no AtomicRegion line}"
fi

section "pyvcl status"
"$WORK/venv/bin/pyvcl" status
rc=$?
if [ $rc = 0 ]; then ok pyvcl-status "exit 0"; else bad pyvcl-status "exit $rc"; fi

section "python -m pytest -q tests/test_atomics.py tests/test_fifo.py tests/test_fifo_props.py tests/test_mq.py"
echo "(from $WORK/testrun: tests/ and pyproject.toml only; PYVCL_SHARED_DIR=${PYVCL_SHARED_DIR:-unset})"
"$PY" -m pytest -q -p no:cacheprovider tests/test_atomics.py tests/test_fifo.py \
    tests/test_fifo_props.py tests/test_mq.py >"$WORK/pytest.log" 2>&1
rc=$?
# The skip reasons, counted (pytest -ra prints one line per reason and location).
grep -E '^SKIPPED' "$WORK/pytest.log" | sed -E 's/^SKIPPED \[([0-9]+)\] [^:]+:[0-9]+: /\1 /' \
    | awk '{n=$1; $1=""; c[$0]+=n} END {for (r in c) printf "  skipped %3d:%s\n", c[r], r}'
grep -E '^(FAILED|ERROR)' "$WORK/pytest.log"
summary=$(tail -1 "$WORK/pytest.log")
echo "$summary"
skips=$(grep -cE '^SKIPPED' "$WORK/pytest.log")
other=$(grep -E '^SKIPPED' "$WORK/pytest.log" | grep -v libatomic | grep -c .)
if [ $rc = 0 ] && [ "$skips" = 0 ]; then
    ok pytest "$summary"
elif [ $rc = 0 ] && [ "$other" = 0 ]; then
    ok pytest "$summary (every skip: libatomic-only test)"
elif [ $rc = 0 ]; then
    ok pytest "$summary ($other skip line(s) not about libatomic, see above)"
else
    tail -40 "$WORK/pytest.log"
    bad pytest "exit $rc: $summary"
fi
INNER

echo "== checkout $REPO ($(git -C "$REPO" describe --always --dirty 2>/dev/null)) -> $WORK/src"
echo "== root $ROOT (created $(cat "$STAMP"))"
chroot "$ROOT" /usr/bin/env -i "${ENVS[@]}" /bin/bash "$IN/check.sh"

echo
echo "================ clean environment check: summary ================"
if [ ! -s "$WORK/results.txt" ]; then
    echo "FAIL no results (the in-root script did not run)"
    echo "RESULT: FAIL"
    exit 1
fi
cat "$WORK/results.txt"
if grep -q '^FAIL' "$WORK/results.txt"; then
    echo "RESULT: FAIL"
    exit 1
fi
echo "RESULT: PASS"
exit 0
