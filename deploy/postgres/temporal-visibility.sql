-- Run once by Temporal's postgres image when it initialises an empty data folder (mounted into
-- /docker-entrypoint-initdb.d by docker-compose.yml): the visibility database beside the main one,
-- so the schema job only applies schemas and never has to tell "exists" from a real failure.
CREATE DATABASE temporal_visibility;
