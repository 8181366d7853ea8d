-- One Shipshape database's privileges (decision 0071). Run as a superuser in that database, after
-- roles.sql and before the first migration; safe to rerun:
--
--   psql -v ON_ERROR_STOP=1 -d shipshape -f deploy/postgres/database.sql
--
-- Default privileges are per database and per creating role: they cover every table and sequence
-- that shipshape_owner (the migrations) creates later, and only those — so migrations must run as
-- shipshape_owner, never as postgres.
\set ON_ERROR_STOP 1
SELECT current_database() AS db \gset

-- Nobody connects or creates temporary tables unless named here.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
ALTER DATABASE :"db" OWNER TO shipshape_owner;
GRANT CONNECT ON DATABASE :"db" TO shipshape_app, shipshape_reporting, shipshape_monitor;

-- Only the owner creates objects; the others may only use the schema.
ALTER SCHEMA public OWNER TO shipshape_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO shipshape_app, shipshape_reporting;

-- What exists now (a database migrated before this script ran)…
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO shipshape_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO shipshape_app;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO shipshape_reporting;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO shipshape_reporting;
-- …and everything the migrations create from now on.
ALTER DEFAULT PRIVILEGES FOR ROLE shipshape_owner IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO shipshape_app;
ALTER DEFAULT PRIVILEGES FOR ROLE shipshape_owner IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO shipshape_app;
ALTER DEFAULT PRIVILEGES FOR ROLE shipshape_owner IN SCHEMA public
  GRANT SELECT ON TABLES TO shipshape_reporting;
ALTER DEFAULT PRIVILEGES FOR ROLE shipshape_owner IN SCHEMA public
  GRANT SELECT ON SEQUENCES TO shipshape_reporting;
-- Functions (trigger functions of migrations) are executable by PUBLIC by default: keep that off.
ALTER DEFAULT PRIVILEGES FOR ROLE shipshape_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE shipshape_owner IN SCHEMA public
  GRANT EXECUTE ON FUNCTIONS TO shipshape_app;
