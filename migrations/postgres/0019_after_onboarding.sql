-- After onboarding (issue 12): missed calls and their alerts, texts to owners' numbers, plan usage.

-- A call to a live owner's number that nobody answered: who called and when (the call's length
-- is on its `calls` row), and the voicemail once Twilio reports it. The alert goes out when the
-- recording comes, or at alert_due_at without one; alert_due_at is cleared when it goes.
CREATE TABLE missed_calls (
    call_sid       text PRIMARY KEY REFERENCES calls (call_sid),
    owner_id       text NOT NULL REFERENCES owners (id),
    caller         text NOT NULL,
    at             timestamptz NOT NULL,
    recording_sid  text UNIQUE,
    recording_url  text,
    recording_secs integer,
    alert_due_at   timestamptz,
    alerted_at     timestamptz,
    -- How the owner was told: 'sms', 'email', or 'paused' (they had paused alerts).
    alert          text CHECK (alert IN ('sms', 'email', 'paused'))
);

CREATE INDEX missed_calls_due ON missed_calls (alert_due_at) WHERE alert_due_at IS NOT NULL;
CREATE INDEX missed_calls_owner ON missed_calls (owner_id, at);

-- The outbox sends texts from an owner's own number (from_addr; NULL: the onboarding number) and
-- emails (kind 'email': to_addr is still the owner's phone, the address is to_email). topic says
-- what a message is for, so alerts can be counted and costed.
ALTER TABLE outbound_messages ADD COLUMN from_addr text;
ALTER TABLE outbound_messages ADD COLUMN to_email text;
ALTER TABLE outbound_messages ADD COLUMN subject text;
ALTER TABLE outbound_messages ADD COLUMN topic text;
ALTER TABLE outbound_messages DROP CONSTRAINT outbound_messages_kind_check;
ALTER TABLE outbound_messages ADD CONSTRAINT outbound_messages_kind_check
    CHECK (kind IN ('sms', 'verify_call', 'email'));
ALTER TABLE outbound_messages ADD CONSTRAINT outbound_messages_email_has_address
    CHECK (kind <> 'email' OR to_email IS NOT NULL);

-- Owners who texted PAUSE: no missed-call alerts until RESUME.
CREATE TABLE alert_pauses (
    owner_id  text PRIMARY KEY REFERENCES owners (id),
    paused_at timestamptz NOT NULL
);

-- The 80% and 100% plan usage texts, once per owner per billing month each.
CREATE TABLE usage_alerts (
    owner_id     text NOT NULL REFERENCES owners (id),
    period_start timestamptz NOT NULL,
    percent      integer NOT NULL CHECK (percent IN (80, 100)),
    sent_at      timestamptz NOT NULL,
    PRIMARY KEY (owner_id, period_start, percent)
);

-- Caller text-backs: at most one per caller per owner per day (UTC, 'YYYY-MM-DD').
CREATE TABLE caller_text_backs (
    owner_id text NOT NULL REFERENCES owners (id),
    caller   text NOT NULL,
    day      text NOT NULL,
    sent_at  timestamptz NOT NULL,
    PRIMARY KEY (owner_id, caller, day)
);

-- Customers who texted STOP to a business number: no texts to them from that number.
CREATE TABLE customer_opt_outs (
    business_number text NOT NULL,
    customer        text NOT NULL,
    opted_out_at    timestamptz NOT NULL,
    PRIMARY KEY (business_number, customer)
);

-- The console's live feed: a missed call, and how its owner was told.
CREATE FUNCTION live_event_missed_call() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO live_events (kind, owner_id, detail, at)
        VALUES ('call', NEW.owner_id, 'missed call', NEW.at);
    ELSIF OLD.alert IS NULL AND NEW.alert IS NOT NULL THEN
        INSERT INTO live_events (kind, owner_id, detail, at)
        VALUES ('call', NEW.owner_id, 'missed call alert: ' || NEW.alert, NEW.alerted_at);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER live_missed_call AFTER INSERT OR UPDATE OF alert ON missed_calls
    FOR EACH ROW EXECUTE FUNCTION live_event_missed_call();
