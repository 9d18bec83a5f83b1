#!/bin/bash
# usagelog's least-privilege ClickHouse users, from ../users.sql (mounted at
# /etc/usagelog/clickhouse/users.sql by deploy/compose.yaml).
#
# The ClickHouse image runs this once, when the container first initialises its data directory
# (as /docker-entrypoint-initdb.d/users.sh, with the administrator CLICKHOUSE_USER). Run it
# again by hand after changing a password; it replaces the users and roles with what users.sql
# says:
#   docker compose -f deploy/compose.yaml exec clickhouse /docker-entrypoint-initdb.d/users.sh
#
# Passwords enter the SQL only as SHA-256 digests (IDENTIFIED WITH sha256_hash), so any
# character is fine in them and none reaches a query log.
#
# Environment (compose.yaml sets each on the clickhouse service):
#   CLICKHOUSE_USER, CLICKHOUSE_PASSWORD   the administrator the image created (runs the SQL)
#   CLICKHOUSE_WORKER_PASSWORD             required; user usagelog_worker (ingest workers)
#   CLICKHOUSE_CLI_PASSWORD                required; user usagelog_cli (the usagelog CLI, read-only)
#   GRAFANA_CLICKHOUSE_PASSWORD            required; user grafana (read-only)
#   CLICKHOUSE_COLLECTOR_PASSWORD          required; user usagelog_collector (the collector's
#                                          clickhouse overlay)
#   USAGELOG_CLICKHOUSE_DATABASE           default usagelog; usagelog's database
#   USAGELOG_COLLECTOR_CLICKHOUSE_DATABASE default usagelog_otel; the collector exporter's database
#   USAGELOG_USERS_SQL                     default /etc/usagelog/clickhouse/users.sql
#
# With --print the rendered SQL goes to stdout instead of ClickHouse (nothing else is needed).
set -euo pipefail

sql_file="${USAGELOG_USERS_SQL:-/etc/usagelog/clickhouse/users.sql}"
database="${USAGELOG_CLICKHOUSE_DATABASE:-usagelog}"
otel_database="${USAGELOG_COLLECTOR_CLICKHOUSE_DATABASE:-usagelog_otel}"

die() {
    echo "users.sh: $*" >&2
    exit 1
}
digest() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

[[ -r "${sql_file}" ]] || die "cannot read ${sql_file} (USAGELOG_USERS_SQL)"
[[ "${database}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] \
    || die "USAGELOG_CLICKHOUSE_DATABASE='${database}' is not a database name"
[[ "${otel_database}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] \
    || die "USAGELOG_COLLECTOR_CLICKHOUSE_DATABASE='${otel_database}' is not a database name"
for var in CLICKHOUSE_WORKER_PASSWORD CLICKHOUSE_CLI_PASSWORD GRAFANA_CLICKHOUSE_PASSWORD \
    CLICKHOUSE_COLLECTOR_PASSWORD; do
    [[ -n "${!var:-}" ]] || die "${var} is not set"
done

rendered="$(sed \
    -e "s/\${DATABASE}/${database}/g" \
    -e "s/\${OTEL_DATABASE}/${otel_database}/g" \
    -e "s/\${WORKER_PASSWORD_SHA256}/$(digest "${CLICKHOUSE_WORKER_PASSWORD}")/g" \
    -e "s/\${CLI_PASSWORD_SHA256}/$(digest "${CLICKHOUSE_CLI_PASSWORD}")/g" \
    -e "s/\${GRAFANA_PASSWORD_SHA256}/$(digest "${GRAFANA_CLICKHOUSE_PASSWORD}")/g" \
    -e "s/\${COLLECTOR_PASSWORD_SHA256}/$(digest "${CLICKHOUSE_COLLECTOR_PASSWORD}")/g" \
    "${sql_file}")"
left="$(grep -o '\${[A-Za-z_0-9]*}' <<<"${rendered}" | sort -u | tr '\n' ' ' || true)"
[[ -z "${left}" ]] || die "placeholders left in ${sql_file}: ${left}"

if [[ "${1:-}" == "--print" ]]; then
    printf '%s\n' "${rendered}"
    exit 0
fi
clickhouse client --user "${CLICKHOUSE_USER:-default}" --password "${CLICKHOUSE_PASSWORD:-}" --multiquery \
    <<<"${rendered}"
echo "users.sh: usagelog_worker, usagelog_cli, grafana and usagelog_collector are in place" >&2
