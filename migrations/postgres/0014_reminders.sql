-- One reminder timer per owner, re-armed by every text they send (issue 14). The sweeper claims
-- due rows with FOR UPDATE SKIP LOCKED, so replicas never send the same reminder twice.
CREATE TABLE reminder_timers (
    client_id  text PRIMARY KEY REFERENCES clients (id),
    -- The step the owner was on when it was armed.
    state      text NOT NULL,
    -- Reminders sent since the owner's last text.
    sent       integer NOT NULL DEFAULT 0,
    -- The owner's last text: the schedule and expiry count from it.
    anchor_at  timestamptz NOT NULL,
    -- When the sweeper looks at it next; NULL when there is nothing more to do until a text.
    due_at     timestamptz,
    -- Set when the conversation expired: the next text is welcomed back.
    expired_at timestamptz
);

CREATE INDEX reminder_timers_due ON reminder_timers (due_at) WHERE due_at IS NOT NULL;

-- Every reminder sent, and whether the owner moved on to another step after it.
CREATE TABLE reminders_sent (
    id          bigserial PRIMARY KEY,
    client_id   text NOT NULL REFERENCES clients (id),
    state       text NOT NULL,
    attempt     integer NOT NULL,
    outbound_id bigint NOT NULL,
    sent_at     timestamptz NOT NULL,
    moved_on_at timestamptz
);

CREATE INDEX reminders_sent_waiting ON reminders_sent (client_id) WHERE moved_on_at IS NULL;

-- Owners part-way through when this arrived: their last change stands in for their last text, and
-- the sweep decides at once (a reminder if one is due, held through quiet hours; expiry if they
-- have been silent too long).
INSERT INTO reminder_timers (client_id, state, sent, anchor_at, due_at)
SELECT id, state, 0, updated_at, updated_at FROM clients
WHERE NOT opted_out AND state NOT IN ('COMPLETE', 'S9_TEST_CALL_DETECTED');
