-- The outbox also carries verification calls: placed by the same workers, with the same claims.
ALTER TABLE outbound_messages ADD COLUMN kind text NOT NULL DEFAULT 'sms'
    CHECK (kind IN ('sms', 'verify_call'));

-- The TwiML a call was answered with, so a retried CallSid gets the same answer.
ALTER TABLE calls ADD COLUMN response text;

-- Owners waiting for a test call, oldest first, for the verification window's sweep.
CREATE INDEX clients_verifying ON clients (verify_started_at)
    WHERE verify_started_at IS NOT NULL;
