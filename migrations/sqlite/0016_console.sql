-- The ops console (issue 15): its live feed and its sign-in limit. The same as migrations/postgres.

-- Business events for the live feed, written by triggers on the tables the engine already writes,
-- so the engine's own write path is unchanged. Never a phone number, a body or an email here: only
-- what happened, to which owner. Kept for a day (pruned by the server on a timer).
CREATE TABLE live_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT NOT NULL,
    owner_id  TEXT,
    detail    TEXT NOT NULL,
    at        TEXT NOT NULL
) STRICT;

CREATE INDEX live_events_at ON live_events (at);

-- Failed console sign-ins, counted to limit guessing.
CREATE TABLE console_signin_failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL
) STRICT;

CREATE INDEX console_signin_failures_at ON console_signin_failures (at);

-- A text counts once it is answered, whether the answer is written with the claim or after it:
-- one row per text, retries none.
CREATE TRIGGER live_text_in_answered AFTER INSERT ON inbound_messages
    WHEN NEW.response IS NOT NULL
BEGIN
    INSERT INTO live_events (kind, owner_id, detail, at)
    VALUES ('text_in', NEW.owner_id, 'text received', NEW.received_at);
END;

CREATE TRIGGER live_text_in AFTER UPDATE OF response ON inbound_messages
    WHEN OLD.response IS NULL AND NEW.response IS NOT NULL
BEGIN
    INSERT INTO live_events (kind, owner_id, detail, at)
    VALUES ('text_in', NEW.owner_id, 'text received', NEW.received_at);
END;

CREATE TRIGGER live_state AFTER INSERT ON state_history
BEGIN
    INSERT INTO live_events (kind, owner_id, detail, at)
    VALUES ('state', NEW.owner_id,
            NEW.from_state || ' → ' || NEW.to_state || ' (' || NEW.cause || ')', NEW.at);
END;

CREATE TRIGGER live_webhook_new AFTER INSERT ON webhook_events
BEGIN
    INSERT INTO live_events (kind, owner_id, detail, at)
    VALUES (CASE WHEN NEW.status = 'failed' THEN 'failure' ELSE 'payment' END,
            NEW.payload -> 'data' -> 'object' ->> 'client_reference_id',
            NEW.provider || ' ' || NEW.event_type || ' ' || NEW.status,
            COALESCE(NEW.processed_at, NEW.received_at));
END;

CREATE TRIGGER live_webhook AFTER UPDATE OF status ON webhook_events
    WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO live_events (kind, owner_id, detail, at)
    VALUES (CASE WHEN NEW.status = 'failed' THEN 'failure' ELSE 'payment' END,
            NEW.payload -> 'data' -> 'object' ->> 'client_reference_id',
            NEW.provider || ' ' || NEW.event_type || ' ' || NEW.status,
            COALESCE(NEW.processed_at, NEW.received_at));
END;

CREATE TRIGGER live_pool AFTER UPDATE OF status ON pool_numbers
    WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO live_events (kind, owner_id, detail, at)
    VALUES ('allocation', COALESCE(NEW.owner_id, OLD.owner_id),
            'number ' || OLD.status || ' → ' || NEW.status || ' (' || NEW.country || ')',
            NEW.updated_at);
END;

CREATE TRIGGER live_call_new AFTER INSERT ON calls
BEGIN
    INSERT INTO live_events (kind, owner_id, detail, at)
    VALUES ('call', NEW.owner_id, NEW.direction || ' call ' || NEW.status, NEW.updated_at);
END;

CREATE TRIGGER live_call AFTER UPDATE OF status ON calls
    WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO live_events (kind, owner_id, detail, at)
    VALUES ('call', NEW.owner_id, NEW.direction || ' call ' || NEW.status, NEW.updated_at);
END;

CREATE TRIGGER live_outbound AFTER UPDATE OF status ON outbound_messages
    WHEN OLD.status IS NOT NEW.status
     AND NEW.status IN ('sent', 'delivered', 'undelivered', 'failed')
BEGIN
    INSERT INTO live_events (kind, owner_id, detail, at)
    VALUES (CASE WHEN NEW.status IN ('undelivered', 'failed') THEN 'failure' ELSE 'text_out' END,
            NEW.owner_id, NEW.kind || ' ' || NEW.status, NEW.updated_at);
END;

-- A failed text resent from the console is a new outbox message naming the one it copies; the
-- unique index lets each failed text be resent once, however many operators click at once.
ALTER TABLE outbound_messages ADD COLUMN resend_of INTEGER REFERENCES outbound_messages (id);
CREATE UNIQUE INDEX outbound_messages_resend_of ON outbound_messages (resend_of);
