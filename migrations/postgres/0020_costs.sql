-- What every owner costs (issue 13): one row per billable thing, written in the same transaction
-- as the thing itself.
CREATE TABLE cost_ledger (
    id               bigserial PRIMARY KEY,
    -- What the row is for (`sms_in:<MessageSid>`, `rent:<number>:<month>`, ...): a retried
    -- webhook, a late worker or a second replica writes nothing twice.
    source_key       text NOT NULL UNIQUE,
    -- NULL for what no owner caused (numbers bought or rented for the pool). No foreign key: the
    -- ledger is a record of money spent, kept whatever becomes of the owner.
    owner_id         text,
    kind             text NOT NULL CHECK (kind IN ('sms_inbound', 'sms_outbound', 'call_inbound',
                         'call_outbound', 'number_purchase', 'number_rental', 'email')),
    -- Segments, started minutes, months, numbers or emails.
    quantity         bigint NOT NULL CHECK (quantity >= 0),
    country          text NOT NULL,
    -- Amounts are whole millionths of the currency's unit (see src/prices.rs).
    currency         text NOT NULL,
    estimated_micros bigint NOT NULL,
    -- What the provider says it cost, once it does, in its own currency.
    real_micros      bigint,
    real_currency    text,
    -- The real cost when known, else the estimate, in the reporting currency.
    reporting_micros bigint NOT NULL,
    -- The message or call sid whose real price replaces the estimate.
    provider_id      text,
    -- Times the provider was asked for the real price, and when last.
    price_checks     integer NOT NULL DEFAULT 0,
    price_checked_at timestamptz,
    at               timestamptz NOT NULL
);

CREATE INDEX cost_ledger_at ON cost_ledger (at);
CREATE INDEX cost_ledger_owner ON cost_ledger (owner_id, at) WHERE owner_id IS NOT NULL;
CREATE INDEX cost_ledger_unpriced ON cost_ledger (at)
    WHERE provider_id IS NOT NULL AND real_micros IS NULL;

-- Budget alerts, one per period, level and period start: the primary key makes "once per period"
-- hold across replicas.
CREATE TABLE budget_alerts (
    period        text NOT NULL CHECK (period IN ('day', 'month')),
    -- `2026-11-30` for a day, `2026-11` for a month (UTC).
    period_start  text NOT NULL,
    level         text NOT NULL CHECK (level IN ('warning', 'exceeded')),
    spent_micros  bigint NOT NULL,
    budget_micros bigint NOT NULL,
    at            timestamptz NOT NULL,
    PRIMARY KEY (period, period_start, level)
);

-- New owners who texted while a budget was exceeded: told we are full, served first (oldest
-- first) when the period turns.
CREATE TABLE budget_held_owners (
    owner_id   text PRIMARY KEY REFERENCES owners (id),
    first_text text NOT NULL,
    held_at    timestamptz NOT NULL
);

CREATE INDEX budget_held_owners_held_at ON budget_held_owners (held_at, owner_id);
