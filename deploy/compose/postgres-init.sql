-- Tables that config/compose.yaml queries (alias `pg`), with demo rows.
-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d/).
-- authz only reads: the `authz` user owns nothing else of value in this demo database.

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
