-- name: connected_servers
-- How many chatterwerks servers use this database: each holds one LISTEN
-- connection named $1 (hub.APPLICATION_NAME). Both columns are visible to
-- any role, not only to superusers.
SELECT count(*)::int
FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1;
