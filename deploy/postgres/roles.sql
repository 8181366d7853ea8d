-- Shipshape's PostgreSQL roles (decision 0071). Run once per cluster as a superuser; safe to rerun:
--
--   psql -v ON_ERROR_STOP=1 -v owner_password=… -v app_password=… -v reporting_password=… \
--        -v replication_password=… -v monitor_password=… -f deploy/postgres/roles.sql
--
-- Passwords may be given as SCRAM secrets (SCRAM-SHA-256$…), so no plain password reaches the
-- server's logs; password_encryption must be scram-sha-256 (PostgreSQL 15's default).
--
--   shipshape_owner      owns the database, its schema and every table: migrations run as it
--                        (`npm run db:migrate` with its URL); never used by the running service.
--   shipshape_app        the service: SELECT/INSERT/UPDATE/DELETE on the tables, nothing else —
--                        no DDL, no TRUNCATE, no superuser, no role or database creation.
--   shipshape_reporting  read-only: SELECT on every table, also those later migrations create.
--   shipshape_replication streaming replication and base backups (pg_basebackup, pgBackRest).
--   shipshape_monitor    pg_monitor, for postgres_exporter and PgBouncer's SHOW commands.
--
-- Timeouts live here, per role, not in the client (PgBouncer 1.18 refuses them as startup
-- parameters); the service sets its own with SET LOCAL inside each transaction.
\set ON_ERROR_STOP 1
SET password_encryption = 'scram-sha-256';

SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY['shipshape_owner', 'shipshape_app',
  'shipshape_reporting', 'shipshape_replication', 'shipshape_monitor']) AS r
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec

ALTER ROLE shipshape_owner NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS LOGIN
  CONNECTION LIMIT 4 PASSWORD :'owner_password';
ALTER ROLE shipshape_app NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS LOGIN
  CONNECTION LIMIT 60 PASSWORD :'app_password';
ALTER ROLE shipshape_reporting NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS LOGIN
  CONNECTION LIMIT 5 PASSWORD :'reporting_password';
ALTER ROLE shipshape_replication NOSUPERUSER NOCREATEDB NOCREATEROLE REPLICATION NOBYPASSRLS LOGIN
  CONNECTION LIMIT 4 PASSWORD :'replication_password';
ALTER ROLE shipshape_monitor NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS LOGIN
  CONNECTION LIMIT 3 PASSWORD :'monitor_password';
GRANT pg_monitor TO shipshape_monitor;

-- The service: a statement outside a transaction may run 10 s; a transaction left idle is ended.
ALTER ROLE shipshape_app SET statement_timeout = '10s';
ALTER ROLE shipshape_app SET idle_in_transaction_session_timeout = '10s';
-- Reporting: long reads are fine, writes are refused by the grants (read-only is a guard rail only).
ALTER ROLE shipshape_reporting SET statement_timeout = '60s';
ALTER ROLE shipshape_reporting SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE shipshape_reporting SET default_transaction_read_only = on;
-- Migrations wait for locks only briefly (they would queue every request behind them).
ALTER ROLE shipshape_owner SET lock_timeout = '5s';
ALTER ROLE shipshape_owner SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE shipshape_monitor SET statement_timeout = '5s';
