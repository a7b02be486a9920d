-- The whole schema of the onboarding server, PostgreSQL dialect (migrations/sqlite mirrors it).

-- Owners and everything the conversation knows about them.
CREATE TABLE clients (
    id                text PRIMARY KEY,
    owner_phone       text NOT NULL UNIQUE,
    -- Derived from owner_phone at insert ('GB', 'US', 'XX'): the waitlist is per country.
    country           text NOT NULL,
    locale            text NOT NULL,
    state             text NOT NULL,
    gate              text,
    business_type     text,
    location          text,
    business_name     text,
    owner_name        text,
    notify            text,
    phone_type        text,
    misses            integer NOT NULL DEFAULT 0,
    opted_out         boolean NOT NULL DEFAULT false,
    payment_active    boolean NOT NULL DEFAULT false,
    paid_at           timestamptz,
    twilio_number     text UNIQUE,
    waitlisted_at     timestamptz,
    verify_started_at timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);

-- The waitlist of each country, first come first served.
CREATE INDEX clients_waitlist ON clients (country, waitlisted_at, id) WHERE gate = 'awaiting_number';

-- Every inbound SMS, keyed by Twilio's MessageSid so a retried webhook gets the same answer.
CREATE TABLE inbound_messages (
    message_sid text PRIMARY KEY,
    client_id   text REFERENCES clients (id),
    from_addr   text NOT NULL,
    to_addr     text NOT NULL,
    body        text NOT NULL,
    -- The TwiML answered; NULL only while the claiming transaction is open.
    response    text,
    received_at timestamptz NOT NULL
);

CREATE INDEX inbound_messages_client ON inbound_messages (client_id, received_at);

CREATE TABLE state_history (
    id         bigserial PRIMARY KEY,
    client_id  text NOT NULL REFERENCES clients (id),
    from_state text NOT NULL,
    to_state   text NOT NULL,
    cause      text NOT NULL,
    at         timestamptz NOT NULL
);

CREATE INDEX state_history_client ON state_history (client_id, id);

-- The outbox: texts the server sends first, written in the transaction of their cause.
CREATE TABLE outbound_messages (
    id              bigserial PRIMARY KEY,
    client_id       text NOT NULL REFERENCES clients (id),
    to_addr         text NOT NULL,
    body            text NOT NULL,
    status          text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    twilio_sid      text UNIQUE,
    last_error      text,
    error_code      text,
    next_attempt_at timestamptz NOT NULL,
    -- While status = 'sending': when the claiming worker is presumed dead.
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

-- Claiming reads only the live part of the outbox, however long its history.
CREATE INDEX outbound_messages_due ON outbound_messages (status, next_attempt_at)
    WHERE status IN ('pending', 'sending');
CREATE INDEX outbound_messages_client ON outbound_messages (client_id, id);

-- The pool of dedicated numbers.
CREATE TABLE pool_numbers (
    e164              text PRIMARY KEY,
    status            text NOT NULL
        CHECK (status IN ('AVAILABLE', 'RESERVED', 'ASSIGNED', 'QUARANTINED')),
    -- UNIQUE: no owner ever holds two numbers.
    client_id         text UNIQUE REFERENCES clients (id),
    country           text NOT NULL,
    area_code         text,
    twilio_sid        text,
    reserved_at       timestamptz,
    assigned_at       timestamptz,
    quarantined_until timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    CHECK (status <> 'ASSIGNED' OR client_id IS NOT NULL),
    CHECK (client_id IS NULL OR status IN ('RESERVED', 'ASSIGNED'))
);

-- Finding a free number reads one index entry, whether the pool holds ten numbers or a million.
CREATE INDEX pool_numbers_available_area ON pool_numbers (country, area_code, created_at, e164)
    WHERE status = 'AVAILABLE';
CREATE INDEX pool_numbers_available ON pool_numbers (country, created_at, e164)
    WHERE status = 'AVAILABLE';
CREATE INDEX pool_numbers_quarantine_ends ON pool_numbers (quarantined_until)
    WHERE status = 'QUARANTINED';

-- Provider webhook events (Stripe), stored once by their id.
CREATE TABLE webhook_events (
    provider     text NOT NULL,
    event_id     text NOT NULL,
    event_type   text NOT NULL,
    status       text NOT NULL CHECK (status IN ('received', 'processed', 'ignored', 'failed')),
    error        text,
    payload      jsonb NOT NULL,
    received_at  timestamptz NOT NULL,
    processed_at timestamptz,
    PRIMARY KEY (provider, event_id)
);

-- Voice calls (forwarding tests and forwarded calls).
CREATE TABLE calls (
    call_sid        text PRIMARY KEY,
    client_id       text REFERENCES clients (id),
    direction       text NOT NULL,
    from_addr       text NOT NULL,
    to_addr         text NOT NULL,
    forwarded_from  text,
    status          text NOT NULL,
    sequence_number integer,
    duration_secs   integer,
    is_test_call    boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

CREATE INDEX calls_client ON calls (client_id, created_at);
