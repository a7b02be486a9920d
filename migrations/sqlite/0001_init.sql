-- The whole schema of the onboarding server, SQLite dialect (migrations/postgres mirrors it).
-- Timestamps are RFC 3339 text in UTC as sqlx writes them ('2025-01-01T09:00:00.123+00:00'), so
-- they compare correctly as text; booleans are 0 or 1. STRICT makes SQLite refuse a value of the
-- wrong type instead of storing it.

-- Owners and everything the conversation knows about them.
CREATE TABLE clients (
    id                TEXT PRIMARY KEY NOT NULL,
    owner_phone       TEXT NOT NULL UNIQUE,
    -- Derived from owner_phone at insert ('GB', 'US', 'XX'): the waitlist is per country.
    country           TEXT NOT NULL,
    locale            TEXT NOT NULL,
    state             TEXT NOT NULL,
    gate              TEXT,
    business_type     TEXT,
    location          TEXT,
    business_name     TEXT,
    owner_name        TEXT,
    notify            TEXT,
    phone_type        TEXT,
    misses            INTEGER NOT NULL DEFAULT 0,
    opted_out         INTEGER NOT NULL DEFAULT 0 CHECK (opted_out IN (0, 1)),
    payment_active    INTEGER NOT NULL DEFAULT 0 CHECK (payment_active IN (0, 1)),
    paid_at           TEXT,
    twilio_number     TEXT UNIQUE,
    waitlisted_at     TEXT,
    verify_started_at TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
) STRICT;

-- The waitlist of each country, first come first served.
CREATE INDEX clients_waitlist ON clients (country, waitlisted_at, id) WHERE gate = 'awaiting_number';

-- Every inbound SMS, keyed by Twilio's MessageSid so a retried webhook gets the same answer.
CREATE TABLE inbound_messages (
    message_sid TEXT PRIMARY KEY NOT NULL,
    client_id   TEXT REFERENCES clients (id),
    from_addr   TEXT NOT NULL,
    to_addr     TEXT NOT NULL,
    body        TEXT NOT NULL,
    -- The TwiML answered; NULL only while the claiming transaction is open.
    response    TEXT,
    received_at TEXT NOT NULL
) STRICT;

CREATE INDEX inbound_messages_client ON inbound_messages (client_id, received_at);

CREATE TABLE state_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id  TEXT NOT NULL REFERENCES clients (id),
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    cause      TEXT NOT NULL,
    at         TEXT NOT NULL
) STRICT;

CREATE INDEX state_history_client ON state_history (client_id, id);

-- The outbox: texts the server sends first, written in the transaction of their cause.
CREATE TABLE outbound_messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id       TEXT NOT NULL REFERENCES clients (id),
    to_addr         TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    twilio_sid      TEXT UNIQUE,
    last_error      TEXT,
    error_code      TEXT,
    next_attempt_at TEXT NOT NULL,
    -- While status = 'sending': when the claiming worker is presumed dead.
    lease_until     TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;

-- Claiming reads only the live part of the outbox, however long its history.
CREATE INDEX outbound_messages_due ON outbound_messages (status, next_attempt_at)
    WHERE status IN ('pending', 'sending');
CREATE INDEX outbound_messages_client ON outbound_messages (client_id, id);

-- The pool of dedicated numbers.
CREATE TABLE pool_numbers (
    e164              TEXT PRIMARY KEY NOT NULL,
    status            TEXT NOT NULL
        CHECK (status IN ('AVAILABLE', 'RESERVED', 'ASSIGNED', 'QUARANTINED')),
    -- UNIQUE: no owner ever holds two numbers.
    client_id         TEXT UNIQUE REFERENCES clients (id),
    country           TEXT NOT NULL,
    area_code         TEXT,
    twilio_sid        TEXT,
    reserved_at       TEXT,
    assigned_at       TEXT,
    quarantined_until TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    CHECK (status <> 'ASSIGNED' OR client_id IS NOT NULL),
    CHECK (client_id IS NULL OR status IN ('RESERVED', 'ASSIGNED'))
) STRICT;

-- Finding a free number reads one index entry, whether the pool holds ten numbers or a million.
CREATE INDEX pool_numbers_available_area ON pool_numbers (country, area_code, created_at, e164)
    WHERE status = 'AVAILABLE';
CREATE INDEX pool_numbers_available ON pool_numbers (country, created_at, e164)
    WHERE status = 'AVAILABLE';
CREATE INDEX pool_numbers_quarantine_ends ON pool_numbers (quarantined_until)
    WHERE status = 'QUARANTINED';

-- Provider webhook events (Stripe), stored once by their id. payload is JSON text.
CREATE TABLE webhook_events (
    provider     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('received', 'processed', 'ignored', 'failed')),
    error        TEXT,
    payload      TEXT NOT NULL CHECK (json_valid(payload)),
    received_at  TEXT NOT NULL,
    processed_at TEXT,
    PRIMARY KEY (provider, event_id)
) STRICT;

-- Voice calls (forwarding tests and forwarded calls).
CREATE TABLE calls (
    call_sid        TEXT PRIMARY KEY NOT NULL,
    client_id       TEXT REFERENCES clients (id),
    direction       TEXT NOT NULL,
    from_addr       TEXT NOT NULL,
    to_addr         TEXT NOT NULL,
    forwarded_from  TEXT,
    status          TEXT NOT NULL,
    sequence_number INTEGER,
    duration_secs   INTEGER,
    is_test_call    INTEGER NOT NULL DEFAULT 0 CHECK (is_test_call IN (0, 1)),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;

CREATE INDEX calls_client ON calls (client_id, created_at);
