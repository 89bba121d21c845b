-- The gateway's orders: run by the host when it starts (`schema` in the
-- manifest's grant), on SQLite and on PostgreSQL alike.
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    items INTEGER NOT NULL,
    charge_id TEXT NOT NULL
);
