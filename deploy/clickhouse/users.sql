-- usagelog's ClickHouse users, each with the least it needs. Rendered and run by
-- initdb/users.sh as the administrator (CLICKHOUSE_USER) when the container first initialises
-- its data; run that script again to apply changed passwords or privileges: roles and users are
-- created OR REPLACE and granted afresh, so the result is always exactly what this file says.
-- ${..._SHA256} are the SHA-256 hex digests of the passwords: no password is ever part of SQL
-- text, a query log or a process list.
--
-- user                 role                   for
-- usagelog_worker      usagelog_writer        the ingest workers: read and write usagelog's tables,
--                                             and the DDL its migrations and retention run
-- usagelog_cli         usagelog_reader        the CLI (timeline, top, audit, query, export)
-- grafana              usagelog_reader        Grafana's data source
-- usagelog_collector   usagelog_otel_writer   the collector's optional clickhouse overlay (its own
--                                             database usagelog_otel, which the exporter creates)
--
-- Nobody here gets DROP (but the writer's on usage_events and usage_events_new: migration 010
-- converts usage_events by building usage_events_new and exchanging the two), TRUNCATE, ALTER DELETE/UPDATE, access management, SYSTEM, or any
-- source (FILE, URL, S3, REMOTE, ...): ClickHouse refuses the table functions file(), url(),
-- s3(), remote() to a user without the matching source privilege. The readers' profile adds
-- readonly = 2 (reads and query settings only; Grafana sets per-query settings, which
-- readonly = 1 would refuse).

-- ── roles ─────────────────────────────────────────────────────────────────────────────────
CREATE ROLE OR REPLACE usagelog_writer;
-- The migrations (ingest/usagelog/ingest/migrations) and retention.py run exactly these
-- kinds of statement; tests/deploy/test_clickhouse_users.py keeps the list in step with them.
GRANT SELECT, INSERT,
      CREATE DATABASE, CREATE TABLE, CREATE VIEW,
      ALTER ADD COLUMN, ALTER MODIFY SETTING, ALTER ADD PROJECTION, ALTER MATERIALIZE PROJECTION,
      ALTER MODIFY TTL
    ON ${DATABASE}.* TO usagelog_writer;
GRANT DROP TABLE ON ${DATABASE}.usage_events TO usagelog_writer;
GRANT DROP TABLE ON ${DATABASE}.usage_events_new TO usagelog_writer;

CREATE ROLE OR REPLACE usagelog_reader;
GRANT SELECT ON ${DATABASE}.* TO usagelog_reader;

CREATE ROLE OR REPLACE usagelog_otel_writer;
GRANT SELECT, INSERT, CREATE DATABASE, CREATE TABLE ON ${OTEL_DATABASE}.* TO usagelog_otel_writer;

-- optimize_use_implicit_projections = 0: with it, chDB/ClickHouse 26.9 miscounts count() over a
-- time range that covers part of a month partition of usage_events (it adds an exact count from
-- the primary key, whose second column is the timestamp, to a read of the same rows).
CREATE SETTINGS PROFILE OR REPLACE usagelog_read_only SETTINGS readonly = 2, allow_ddl = 0,
    optimize_use_implicit_projections = 0;

-- ── users (a granted role is active at login: new users have DEFAULT ROLE ALL) ──────────────
CREATE USER OR REPLACE usagelog_worker IDENTIFIED WITH sha256_hash BY '${WORKER_PASSWORD_SHA256}';
GRANT usagelog_writer TO usagelog_worker;

CREATE USER OR REPLACE usagelog_cli IDENTIFIED WITH sha256_hash BY '${CLI_PASSWORD_SHA256}'
    SETTINGS PROFILE usagelog_read_only;
GRANT usagelog_reader TO usagelog_cli;

CREATE USER OR REPLACE grafana IDENTIFIED WITH sha256_hash BY '${GRAFANA_PASSWORD_SHA256}'
    SETTINGS PROFILE usagelog_read_only;
GRANT usagelog_reader TO grafana;

CREATE USER OR REPLACE usagelog_collector IDENTIFIED WITH sha256_hash BY '${COLLECTOR_PASSWORD_SHA256}';
GRANT usagelog_otel_writer TO usagelog_collector;
