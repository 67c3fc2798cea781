-- StarPunk v0.9 kept its own migration tracker. preflight's history replaces it;
-- it exists only in databases StarPunk itself migrated.
DROP TABLE IF EXISTS schema_migrations;
