#!/bin/sh
# Run once by the postgres image, as its superuser, when it initialises an empty data folder
# (mounted into /docker-entrypoint-initdb.d by docker-compose.yml). Creates the database's owner,
# which applies the migrations (`dunning migrate`), and the service's login role: a member of
# dunning_service, which the migrations grant only what the service uses (docs/database-roles.md).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v database="$POSTGRES_DB" \
    -v owner_password="$DUNNING_DB_OWNER_PASSWORD" \
    -v service_password="$DUNNING_DB_PASSWORD" <<'SQL'
CREATE ROLE dunning_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE dunning_service NOLOGIN;
CREATE ROLE dunning LOGIN PASSWORD :'service_password' IN ROLE dunning_service;
-- since PostgreSQL 15 the database's owner owns its public schema, where nobody else may create
ALTER DATABASE :"database" OWNER TO dunning_owner;
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO dunning_service;
SQL
