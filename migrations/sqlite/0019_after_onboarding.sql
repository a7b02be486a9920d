-- After onboarding (issue 12): missed calls and their alerts, texts to owners' numbers, plan usage.

-- A call to a live owner's number that nobody answered: who called and when (the call's length
-- is on its `calls` row), and the voicemail once Twilio reports it. The alert goes out when the
-- recording comes, or at alert_due_at without one; alert_due_at is cleared when it goes.
CREATE TABLE missed_calls (
    call_sid       TEXT PRIMARY KEY NOT NULL REFERENCES calls (call_sid),
    owner_id       TEXT NOT NULL REFERENCES owners (id),
    caller         TEXT NOT NULL,
    at             TEXT NOT NULL,
    recording_sid  TEXT UNIQUE,
    recording_url  TEXT,
    recording_secs INTEGER,
    alert_due_at   TEXT,
    alerted_at     TEXT,
    -- How the owner was told: 'sms', 'email', or 'paused' (they had paused alerts).
    alert          TEXT CHECK (alert IN ('sms', 'email', 'paused'))
) STRICT;

CREATE INDEX missed_calls_due ON missed_calls (alert_due_at) WHERE alert_due_at IS NOT NULL;
CREATE INDEX missed_calls_owner ON missed_calls (owner_id, at);

-- The outbox sends texts from an owner's own number (from_addr; NULL: the onboarding number) and
-- emails (kind 'email': to_addr is still the owner's phone, the address is to_email). topic says
-- what a message is for, so alerts can be counted and costed.
ALTER TABLE outbound_messages ADD COLUMN from_addr TEXT;
ALTER TABLE outbound_messages ADD COLUMN to_email TEXT;
ALTER TABLE outbound_messages ADD COLUMN subject TEXT;
ALTER TABLE outbound_messages ADD COLUMN topic TEXT;

-- Owners who texted PAUSE: no missed-call alerts until RESUME.
CREATE TABLE alert_pauses (
    owner_id  TEXT PRIMARY KEY NOT NULL REFERENCES owners (id),
    paused_at TEXT NOT NULL
) STRICT;

-- The 80% and 100% plan usage texts, once per owner per billing month each.
CREATE TABLE usage_alerts (
    owner_id     TEXT NOT NULL REFERENCES owners (id),
    period_start TEXT NOT NULL,
    percent      INTEGER NOT NULL CHECK (percent IN (80, 100)),
    sent_at      TEXT NOT NULL,
    PRIMARY KEY (owner_id, period_start, percent)
) STRICT;

-- Caller text-backs: at most one per caller per owner per day (UTC, 'YYYY-MM-DD').
CREATE TABLE caller_text_backs (
    owner_id TEXT NOT NULL REFERENCES owners (id),
    caller   TEXT NOT NULL,
    day      TEXT NOT NULL,
    sent_at  TEXT NOT NULL,
    PRIMARY KEY (owner_id, caller, day)
) STRICT;

-- Customers who texted STOP to a business number: no texts to them from that number.
CREATE TABLE customer_opt_outs (
    business_number TEXT NOT NULL,
    customer        TEXT NOT NULL,
    opted_out_at    TEXT NOT NULL,
    PRIMARY KEY (business_number, customer)
) STRICT;

-- The console's live feed: a missed call, and how its owner was told.
CREATE TRIGGER live_missed_call_new AFTER INSERT ON missed_calls
BEGIN
    INSERT INTO live_events (kind, owner_id, detail, at)
    VALUES ('call', NEW.owner_id, 'missed call', NEW.at);
END;

CREATE TRIGGER live_missed_call_alert AFTER UPDATE OF alert ON missed_calls
    WHEN OLD.alert IS NULL AND NEW.alert IS NOT NULL
BEGIN
    INSERT INTO live_events (kind, owner_id, detail, at)
    VALUES ('call', NEW.owner_id, 'missed call alert: ' || NEW.alert, NEW.alerted_at);
END;
