-- Tables that config/compose.yaml queries (alias `pg`), with demo rows.
-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d/).
-- authz only reads: it logs in as `authz`, a role that may SELECT and nothing else (the
-- tables belong to the superuser of the image). psql 15+ reads the password from the
-- container's environment (POSTGRES_AUTHZ_PASSWORD, docker-compose.yml).

CREATE TABLE IF NOT EXISTS orders (
    id      TEXT PRIMARY KEY,
    owner   TEXT NOT NULL,
    item    TEXT NOT NULL,
    amount  NUMERIC(12, 2) NOT NULL DEFAULT 0,
    created TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_owner ON orders (owner);

INSERT INTO orders (id, owner, item, amount) VALUES
    ('o-1', 'u1', 'book', 12.50),
    ('o-2', 'u1', 'lamp', 40.00),
    ('o-3', 'u2', 'desk', 220.00)
ON CONFLICT (id) DO NOTHING;

\getenv authz_password POSTGRES_AUTHZ_PASSWORD
CREATE ROLE authz LOGIN PASSWORD :'authz_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT CONNECT ON DATABASE app TO authz;
GRANT USAGE ON SCHEMA public TO authz;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO authz;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO authz;
ALTER ROLE authz SET default_transaction_read_only = on;
