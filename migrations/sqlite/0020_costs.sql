-- What every owner costs (issue 13); migrations/postgres mirrors it, with its notes.
CREATE TABLE cost_ledger (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    source_key       TEXT NOT NULL UNIQUE,
    owner_id         TEXT,
    kind             TEXT NOT NULL CHECK (kind IN ('sms_inbound', 'sms_outbound', 'call_inbound',
                         'call_outbound', 'number_purchase', 'number_rental', 'email')),
    quantity         INTEGER NOT NULL CHECK (quantity >= 0),
    country          TEXT NOT NULL,
    currency         TEXT NOT NULL,
    estimated_micros INTEGER NOT NULL,
    real_micros      INTEGER,
    real_currency    TEXT,
    reporting_micros INTEGER NOT NULL,
    provider_id      TEXT,
    price_checks     INTEGER NOT NULL DEFAULT 0,
    price_checked_at TEXT,
    at               TEXT NOT NULL
) STRICT;

CREATE INDEX cost_ledger_at ON cost_ledger (at);
CREATE INDEX cost_ledger_owner ON cost_ledger (owner_id, at) WHERE owner_id IS NOT NULL;
CREATE INDEX cost_ledger_unpriced ON cost_ledger (at)
    WHERE provider_id IS NOT NULL AND real_micros IS NULL;

CREATE TABLE budget_alerts (
    period        TEXT NOT NULL CHECK (period IN ('day', 'month')),
    period_start  TEXT NOT NULL,
    level         TEXT NOT NULL CHECK (level IN ('warning', 'exceeded')),
    spent_micros  INTEGER NOT NULL,
    budget_micros INTEGER NOT NULL,
    at            TEXT NOT NULL,
    PRIMARY KEY (period, period_start, level)
) STRICT;

CREATE TABLE budget_held_owners (
    owner_id   TEXT PRIMARY KEY NOT NULL REFERENCES owners (id),
    first_text TEXT NOT NULL,
    held_at    TEXT NOT NULL
) STRICT;

CREATE INDEX budget_held_owners_held_at ON budget_held_owners (held_at, owner_id);
