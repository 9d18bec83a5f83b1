#!/usr/bin/env bash
# Build the usagelog collector distribution (usagelog-otelcol) from
# builder-config.yaml with the OpenTelemetry Collector Builder (ocb).
#
# The binary is cached OUTSIDE the repository, keyed by the manifest's hash:
#
#   ${USAGELOG_CACHE_DIR:-$HOME/.cache/usagelog}/collector/<sha256-16>/usagelog-otelcol
#
# so the build runs once per manifest change; later runs only print the path.
# The last line on stdout is always the binary path; every progress message
# goes to stderr, so callers can use: BIN="$(collector/build.sh | tail -n1)".
#
# Environment:
#   USAGELOG_CACHE_DIR    cache root (default: $HOME/.cache/usagelog)
#   USAGELOG_BUILD_JOBS   parallel compile jobs for `go build -p` (default: nproc)
#   USAGELOG_REBUILD=1    ignore a cached binary and build again
#
# Go's own module and build caches (GOMODCACHE, GOCACHE) keep their defaults
# and are reused between builds.
set -euo pipefail

# Keep in step with the component versions in builder-config.yaml.
BUILDER_VERSION="v0.159.0"
DIST_NAME="usagelog-otelcol"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
manifest="${script_dir}/builder-config.yaml"

log() { printf '[collector/build] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not on PATH; install Go (see collector/README.md)"
[[ -f "${manifest}" ]] || die "manifest not found: ${manifest}"

cache_root="${USAGELOG_CACHE_DIR:-${HOME}/.cache/usagelog}/collector"
manifest_hash="$(sha256sum "${manifest}" | cut -c1-16)"
dist_dir="${cache_root}/${manifest_hash}"
binary="${dist_dir}/${DIST_NAME}"

# A cached binary is trusted only if it runs: a build interrupted half-way
# never reaches dist_dir (see the rename below), but a disk can still lie.
binary_ok() { [[ -x "${binary}" ]] && "${binary}" --version >/dev/null 2>&1; }

if [[ "${USAGELOG_REBUILD:-0}" != "1" ]] && binary_ok; then
    log "up to date (manifest ${manifest_hash})"
    printf '%s\n' "${binary}"
    exit 0
fi

mkdir -p "${cache_root}"
# Serialise concurrent builds (e.g. a test run and a shell): the second waits
# and then finds the first one's binary.
exec 9>"${cache_root}/.build.lock"
if ! flock -n 9; then
    log "another build holds ${cache_root}/.build.lock; waiting"
    flock 9
fi
if [[ "${USAGELOG_REBUILD:-0}" != "1" ]] && binary_ok; then
    log "built by a concurrent run (manifest ${manifest_hash})"
    printf '%s\n' "${binary}"
    exit 0
fi

builder_dir="${cache_root}/builder/${BUILDER_VERSION}"
builder="${builder_dir}/builder"
if [[ ! -x "${builder}" ]]; then
    log "installing go.opentelemetry.io/collector/cmd/builder@${BUILDER_VERSION}"
    mkdir -p "${builder_dir}"
    GOBIN="${builder_dir}" go install "go.opentelemetry.io/collector/cmd/builder@${BUILDER_VERSION}" >&2 \
        || die "could not install the collector builder ${BUILDER_VERSION}"
fi

jobs="${USAGELOG_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
[[ "${jobs}" =~ ^[1-9][0-9]*$ ]] || die "USAGELOG_BUILD_JOBS must be a positive integer, got '${jobs}'"

# Build into a staging directory and rename it into place only on success,
# so dist_dir either holds a complete binary or does not exist.
staging="$(mktemp -d "${cache_root}/.staging.${manifest_hash}.XXXXXX")"
trap 'rm -rf "${staging}"' EXIT

# The committed manifest has no output_path; add it under the dist: block.
build_manifest="${staging}/builder-config.yaml"
awk -v out="${staging}/dist" '
    { print }
    /^dist:[[:space:]]*$/ { printf "  output_path: %s\n", out }
' "${manifest}" >"${build_manifest}"
grep -q "output_path: ${staging}/dist" "${build_manifest}" \
    || die "builder-config.yaml has no top-level 'dist:' line"

log "building ${DIST_NAME} (manifest ${manifest_hash}, builder ${BUILDER_VERSION}, ${jobs} jobs)"
log "this compiles the whole collector and takes several minutes on a small machine"
start="$(date +%s)"
# -mod=mod lets `go build` update the generated go.sum if tidy left a gap;
# -p bounds parallel compiles (memory as much as CPU on small machines).
# CGO off gives a static binary, as the official distributions ship.
if ! GOFLAGS="${GOFLAGS:+${GOFLAGS} }-mod=mod -p=${jobs}" CGO_ENABLED=0 \
    "${builder}" --config "${build_manifest}" >&2; then
    die "builder failed; output above (generated sources were in ${staging}/dist)"
fi
[[ -x "${staging}/dist/${DIST_NAME}" ]] || die "builder finished but ${DIST_NAME} was not produced"

rm -rf "${dist_dir}"
mkdir -p "${dist_dir}"
mv "${staging}/dist/${DIST_NAME}" "${binary}"
cp "${manifest}" "${dist_dir}/builder-config.yaml"
binary_ok || die "built binary does not run: ${binary}"

log "built in $(( $(date +%s) - start ))s: $("${binary}" --version 2>&1 | head -n1)"
printf '%s\n' "${binary}"
