-- The ops console (issue 15): its live feed and its sign-in limit. The same as migrations/sqlite.

-- Business events for the live feed, written by triggers on the tables the engine already writes,
-- so the engine's own write path is unchanged and every replica's events reach every replica's
-- feed through the database. Never a phone number, a body or an email here: only what happened,
-- to which owner. Kept for a day (pruned by the server on a timer).
CREATE TABLE live_events (
    id        bigserial PRIMARY KEY,
    kind      text NOT NULL,
    owner_id  text,
    detail    text NOT NULL,
    at        timestamptz NOT NULL
);

CREATE INDEX live_events_at ON live_events (at);

-- Failed console sign-ins, counted across replicas to limit guessing.
CREATE TABLE console_signin_failures (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL
);

CREATE INDEX console_signin_failures_at ON console_signin_failures (at);

CREATE FUNCTION live_event_text_in() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A text counts once it is answered, whether the answer is written with the claim or after
    -- it: one row per text, retries none.
    IF NEW.response IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.response IS NULL) THEN
        INSERT INTO live_events (kind, owner_id, detail, at)
        VALUES ('text_in', NEW.owner_id, 'text received', NEW.received_at);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER live_text_in AFTER INSERT OR UPDATE OF response ON inbound_messages
    FOR EACH ROW EXECUTE FUNCTION live_event_text_in();

CREATE FUNCTION live_event_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO live_events (kind, owner_id, detail, at)
    VALUES ('state', NEW.owner_id,
            NEW.from_state || ' → ' || NEW.to_state || ' (' || NEW.cause || ')', NEW.at);
    RETURN NULL;
END $$;

CREATE TRIGGER live_state AFTER INSERT ON state_history
    FOR EACH ROW EXECUTE FUNCTION live_event_state();

CREATE FUNCTION live_event_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO live_events (kind, owner_id, detail, at)
        VALUES (CASE WHEN NEW.status = 'failed' THEN 'failure' ELSE 'payment' END,
                NEW.payload -> 'data' -> 'object' ->> 'client_reference_id',
                NEW.provider || ' ' || NEW.event_type || ' ' || NEW.status,
                COALESCE(NEW.processed_at, NEW.received_at));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER live_webhook AFTER INSERT OR UPDATE OF status ON webhook_events
    FOR EACH ROW EXECUTE FUNCTION live_event_webhook();

CREATE FUNCTION live_event_pool() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO live_events (kind, owner_id, detail, at)
        VALUES ('allocation', COALESCE(NEW.owner_id, OLD.owner_id),
                'number ' || OLD.status || ' → ' || NEW.status || ' (' || NEW.country || ')',
                NEW.updated_at);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER live_pool AFTER UPDATE OF status ON pool_numbers
    FOR EACH ROW EXECUTE FUNCTION live_event_pool();

CREATE FUNCTION live_event_call() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO live_events (kind, owner_id, detail, at)
        VALUES ('call', NEW.owner_id, NEW.direction || ' call ' || NEW.status, NEW.updated_at);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER live_call AFTER INSERT OR UPDATE OF status ON calls
    FOR EACH ROW EXECUTE FUNCTION live_event_call();

CREATE FUNCTION live_event_outbound() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IS DISTINCT FROM NEW.status
       AND NEW.status IN ('sent', 'delivered', 'undelivered', 'failed') THEN
        INSERT INTO live_events (kind, owner_id, detail, at)
        VALUES (CASE WHEN NEW.status IN ('undelivered', 'failed') THEN 'failure'
                     ELSE 'text_out' END,
                NEW.owner_id, NEW.kind || ' ' || NEW.status, NEW.updated_at);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER live_outbound AFTER UPDATE OF status ON outbound_messages
    FOR EACH ROW EXECUTE FUNCTION live_event_outbound();

-- A failed text resent from the console is a new outbox message naming the one it copies; the
-- unique index lets each failed text be resent once, however many operators click at once.
ALTER TABLE outbound_messages ADD COLUMN resend_of bigint REFERENCES outbound_messages (id);
CREATE UNIQUE INDEX outbound_messages_resend_of ON outbound_messages (resend_of);
