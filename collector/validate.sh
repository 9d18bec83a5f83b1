#!/usr/bin/env bash
# Validate the collector configuration layers with the collector itself
# (`usagelog-otelcol validate`), for base.yaml alone and for each supported
# overlay combination. Exits non-zero if any combination is rejected.
#
# Usage: collector/validate.sh
#
# The binary comes from build.sh (built once, then cached), or from
# USAGELOG_COLLECTOR_BIN when set. Variables the configs need are given
# placeholder values unless already set, so the check runs anywhere; export
# real values first to validate a deployment's own environment. The TLS
# overlay gets a throw-away self-signed certificate.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config_dir="${script_dir}/config"

log() { printf '[collector/validate] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Overlay combinations on top of base.yaml, one per line; "-" is base alone.
# tests/collector/test_collector_configs.py checks the same set.
combinations=(
    "-"
    "monitored"
    "clickhouse"
    "monitored auth"
    "tls"
    "monitored clickhouse auth tls"
    "monitored kafka-sasl"
    "monitored clickhouse auth tls kafka-sasl"
)

binary="${USAGELOG_COLLECTOR_BIN:-}"
if [[ -z "${binary}" ]]; then
    binary="$("${script_dir}/build.sh" | tail -n1)"
fi
[[ -x "${binary}" ]] || die "collector binary not executable: ${binary}"

work_dir="$(mktemp -d "${TMPDIR:-/tmp}/usagelog-validate.XXXXXX")"
trap 'rm -rf "${work_dir}"' EXIT

if [[ -z "${USAGELOG_COLLECTOR_TLS_CERT_FILE:-}" || -z "${USAGELOG_COLLECTOR_TLS_KEY_FILE:-}" ]]; then
    command -v openssl >/dev/null 2>&1 || die "openssl is needed to make a test certificate for tls.yaml"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=localhost" \
        -keyout "${work_dir}/tls.key" -out "${work_dir}/tls.crt" >/dev/null 2>&1 \
        || die "openssl could not create a self-signed certificate"
    export USAGELOG_COLLECTOR_TLS_CERT_FILE="${work_dir}/tls.crt"
    export USAGELOG_COLLECTOR_TLS_KEY_FILE="${work_dir}/tls.key"
fi
export USAGELOG_COLLECTOR_STORAGE_DIR="${USAGELOG_COLLECTOR_STORAGE_DIR:-${work_dir}/storage}"
export USAGELOG_KAFKA_BROKERS="${USAGELOG_KAFKA_BROKERS:-localhost:9092}"
export USAGELOG_COLLECTOR_CLICKHOUSE_ENDPOINT="${USAGELOG_COLLECTOR_CLICKHOUSE_ENDPOINT:-tcp://localhost:9000}"
export USAGELOG_COLLECTOR_TOKEN="${USAGELOG_COLLECTOR_TOKEN:-validate-placeholder-token}"
export USAGELOG_KAFKA_SASL_USERNAME="${USAGELOG_KAFKA_SASL_USERNAME:-validate-placeholder-user}"
export USAGELOG_KAFKA_SASL_PASSWORD="${USAGELOG_KAFKA_SASL_PASSWORD:-validate-placeholder-password}"

failed=0
for combination in "${combinations[@]}"; do
    args=(--config "${config_dir}/base.yaml")
    label="base"
    if [[ "${combination}" != "-" ]]; then
        for overlay in ${combination}; do
            args+=(--config "${config_dir}/${overlay}.yaml")
            label+="+${overlay}"
        done
    fi
    if output="$("${binary}" validate "${args[@]}" 2>&1)"; then
        log "ok    ${label}"
    else
        log "FAIL  ${label}"
        printf '%s\n' "${output}" | sed 's/^/      /' >&2
        failed=$((failed + 1))
    fi
done

if (( failed > 0 )); then
    die "${failed} of ${#combinations[@]} combinations failed"
fi
log "all ${#combinations[@]} combinations valid"
