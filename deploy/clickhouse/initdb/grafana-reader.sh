#!/bin/bash
# Runs once, when the ClickHouse container initialises its data directory: a read-only user for
# Grafana (and anyone who only looks). It can read usagelog's tables and change query settings
# (readonly = 2), never write, alter or drop.
set -euo pipefail
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY '${GRAFANA_CLICKHOUSE_PASSWORD:-grafana}'
    SETTINGS readonly = 2;
GRANT SELECT ON usagelog.* TO grafana;
SQL
