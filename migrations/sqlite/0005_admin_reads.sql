-- What the admin API's reads filter on (src/store/admin.rs); the same as migrations/postgres.

-- The funnel counts owners created since a date; search lists newest first.
CREATE INDEX clients_created ON clients (created_at);

-- Webhook events are listed newest first, filtered by status (failed ones, mostly) and date.
CREATE INDEX webhook_events_received ON webhook_events (received_at);
CREATE INDEX webhook_events_status ON webhook_events (status, received_at);

-- An owner's payment events: by the client_reference_id in the payload, or by the Stripe objects
-- linked to them. The expressions are exactly those in the query, so the planner uses them.
CREATE INDEX webhook_events_client_ref
    ON webhook_events ((payload -> 'data' -> 'object' ->> 'client_reference_id'));
CREATE INDEX webhook_events_customer
    ON webhook_events ((payload -> 'data' -> 'object' ->> 'customer'));
CREATE INDEX webhook_events_subscription
    ON webhook_events ((payload -> 'data' -> 'object' ->> 'subscription'));
CREATE INDEX webhook_events_payment_intent
    ON webhook_events ((payload -> 'data' -> 'object' ->> 'payment_intent'));
CREATE INDEX webhook_events_object
    ON webhook_events ((payload -> 'data' -> 'object' ->> 'id'));
