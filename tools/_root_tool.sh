# Shared by the manual root-based checks (clean_env_check.sh, aarch64_check.sh); sourced, not run.
# Sets REBUILD and KEEP from the arguments (--rebuild, --keep, --help prints the calling script's
# header comment) and defines die, which names the calling script, and apt_mirror, which reads the
# machine's own Debian mirror from its apt sources (the repo names no mirror).
# shellcheck shell=bash

# shellcheck disable=SC2034  # used by the scripts that source this
REBUILD=0 KEEP=0
for arg in "$@"; do
    case $arg in
        --rebuild) REBUILD=1 ;;
        --keep) KEEP=1 ;;
        -h | --help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

die() { echo "$(basename "$0" .sh): $*" >&2; echo "RESULT: FAIL (could not run)"; exit 2; }

# The first Debian archive URI in this machine's apt sources (deb822 .sources files or one-line
# sources.list), skipping the security archive: the mirror debootstrap should use.
apt_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        uri=$(sed -nE -e 's/^URIs:[[:space:]]*([^[:space:]]+).*/\1/p' \
            -e 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' "$f" \
            | grep -v -- '-security' | head -n 1)
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    return 1
}
