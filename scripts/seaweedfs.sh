#!/usr/bin/env bash
# Build SeaweedFS's `weed` (Apache-2.0), the S3-compatible server the archive tests run against
# (tests/ingest/test_archive_s3.py), from the Go module proxy.
#
# The binary is cached OUTSIDE the repository, keyed by the pinned version:
#
#   ${USAGELOG_CACHE_DIR:-$HOME/.cache/usagelog}/seaweedfs/<version>/weed
#
# so the build (several minutes, a ~230 MB binary) runs once; later runs only print the path.
# A cached binary is trusted only if it runs. The last line on stdout is always the binary path;
# progress goes to stderr, so callers can use: WEED="$(scripts/seaweedfs.sh | tail -n1)".
#
# `go install ...@version` refuses a module with `replace` directives, and seaweedfs's go.mod has
# one that matters (go-bip39), so the build goes through a throwaway wrapper module in a temp
# directory that repeats it.
#
# Environment:
#   USAGELOG_CACHE_DIR    cache root (default: $HOME/.cache/usagelog)
#   USAGELOG_BUILD_JOBS   parallel compile jobs for `go build -p` (default: nproc)
#   USAGELOG_REBUILD=1    ignore a cached binary and build again
set -euo pipefail

# A pseudo-version of github.com/seaweedfs/seaweedfs (the module tags its releases without the
# semver prefix Go wants, so the proxy serves commits only).
SEAWEEDFS_VERSION="v0.0.0-20261109003541-7506e5f91cd6"
# Repeated from seaweedfs's own go.mod, which a dependent module's build ignores.
REPLACE="github.com/tyler-smith/go-bip39=github.com/cosmos/go-bip39@v1.0.0"

log() { printf '[seaweedfs] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not on PATH; install Go (see collector/README.md)"

cache_root="${USAGELOG_CACHE_DIR:-${HOME}/.cache/usagelog}/seaweedfs"
dist_dir="${cache_root}/${SEAWEEDFS_VERSION}"
binary="${dist_dir}/weed"

binary_ok() { [[ -x "${binary}" ]] && "${binary}" version >/dev/null 2>&1; }

if [[ "${USAGELOG_REBUILD:-0}" != "1" ]] && binary_ok; then
    log "up to date (${SEAWEEDFS_VERSION})"
    printf '%s\n' "${binary}"
    exit 0
fi

mkdir -p "${cache_root}"
# Serialise concurrent builds: the second waits and then finds the first one's binary.
exec 9>"${cache_root}/.build.lock"
if ! flock -n 9; then
    log "another build holds ${cache_root}/.build.lock; waiting"
    flock 9
fi
if [[ "${USAGELOG_REBUILD:-0}" != "1" ]] && binary_ok; then
    log "built by a concurrent run (${SEAWEEDFS_VERSION})"
    printf '%s\n' "${binary}"
    exit 0
fi

jobs="${USAGELOG_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
[[ "${jobs}" =~ ^[1-9][0-9]*$ ]] || die "USAGELOG_BUILD_JOBS must be a positive integer, got '${jobs}'"

# Build in a staging directory and move the binary into place only on success, so dist_dir
# either holds a complete binary or does not exist.
staging="$(mktemp -d "${cache_root}/.staging.XXXXXX")"
trap 'rm -rf "${staging}"' EXIT

log "building weed ${SEAWEEDFS_VERSION} (${jobs} jobs); this takes several minutes on a small machine"
start="$(date +%s)"
# A subshell's commands under `|| die` would not stop at the first failure (errexit is off
# there), so each step checks its own status.
export GOFLAGS="${GOFLAGS:+${GOFLAGS} }-mod=mod -p=${jobs}" GOWORK=off CGO_ENABLED=0
cd "${staging}"
go mod init usagelog.local/seaweedfs-build >&2 || die "go mod init failed"
go mod edit -replace "${REPLACE}" || die "go mod edit failed"
go get "github.com/seaweedfs/seaweedfs/weed@${SEAWEEDFS_VERSION}" >&2 \
    || die "go get github.com/seaweedfs/seaweedfs/weed@${SEAWEEDFS_VERSION} failed; output above"
# Low priority: the machine that builds this is usually running tests at the same time.
nice -n 10 go build -trimpath -ldflags "-s -w" -o "${staging}/weed" github.com/seaweedfs/seaweedfs/weed >&2 \
    || die "go build failed; output above"
cd - >/dev/null
[[ -x "${staging}/weed" ]] || die "go build finished but weed was not produced"

rm -rf "${dist_dir}"
mkdir -p "${dist_dir}"
mv "${staging}/weed" "${binary}"
binary_ok || die "built binary does not run: ${binary}"

log "built in $(( $(date +%s) - start ))s: $("${binary}" version 2>&1 | head -n1)"
printf '%s\n' "${binary}"
