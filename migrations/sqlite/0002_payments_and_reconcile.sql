-- Which Stripe objects belong to which owner, so later events (a cancelled subscription, a refunded
-- charge) that carry no client_reference_id still find their owner.
CREATE TABLE stripe_links (
    kind       TEXT NOT NULL CHECK (kind IN ('customer', 'subscription', 'payment_intent')),
    stripe_id  TEXT NOT NULL,
    client_id  TEXT NOT NULL REFERENCES clients (id),
    created_at TEXT NOT NULL,
    PRIMARY KEY (kind, stripe_id)
) STRICT;
CREATE INDEX stripe_links_client ON stripe_links (client_id);

-- A send whose outcome is unknown (timeout, 5xx): before sending again, the worker asks Twilio
-- whether the first attempt went out.
ALTER TABLE outbound_messages ADD COLUMN needs_reconcile INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbound_messages ADD COLUMN attempted_at TEXT;
