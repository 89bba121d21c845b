-- The billing database: run by the host when it starts (`schema` in the
-- manifest's grant), on SQLite and on PostgreSQL alike, so every statement
-- can run again.
CREATE TABLE IF NOT EXISTS charges (
    id TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    payment_method TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('charged', 'declined'))
);
CREATE TABLE IF NOT EXISTS customer_totals (
    user_id TEXT PRIMARY KEY,
    charged_cents BIGINT NOT NULL,
    charges BIGINT NOT NULL
);
