-- The business owner is called `owner` everywhere (the code said `client`, which is also Twilio's
-- and the HTTP client): the table, every column naming it, and the indexes after them. SQLite
-- rewrites the foreign keys, CHECKs and indexes that name a renamed table or column; an index
-- cannot be renamed, so those are made again under their new names.
ALTER TABLE clients RENAME TO owners;

ALTER TABLE inbound_messages RENAME COLUMN client_id TO owner_id;
ALTER TABLE state_history RENAME COLUMN client_id TO owner_id;
ALTER TABLE outbound_messages RENAME COLUMN client_id TO owner_id;
ALTER TABLE pool_numbers RENAME COLUMN client_id TO owner_id;
ALTER TABLE calls RENAME COLUMN client_id TO owner_id;
ALTER TABLE stripe_links RENAME COLUMN client_id TO owner_id;
ALTER TABLE reminder_timers RENAME COLUMN client_id TO owner_id;
ALTER TABLE reminders_sent RENAME COLUMN client_id TO owner_id;

DROP INDEX clients_waitlist;
CREATE INDEX owners_waitlist ON owners (country, waitlisted_at, id) WHERE gate = 'awaiting_number';
DROP INDEX clients_verifying;
CREATE INDEX owners_verifying ON owners (verify_started_at) WHERE verify_started_at IS NOT NULL;
DROP INDEX clients_created;
CREATE INDEX owners_created ON owners (created_at);
DROP INDEX inbound_messages_client;
CREATE INDEX inbound_messages_owner ON inbound_messages (owner_id, received_at);
DROP INDEX state_history_client;
CREATE INDEX state_history_owner ON state_history (owner_id, id);
DROP INDEX outbound_messages_client;
CREATE INDEX outbound_messages_owner ON outbound_messages (owner_id, id);
DROP INDEX calls_client;
CREATE INDEX calls_owner ON calls (owner_id, created_at);
DROP INDEX stripe_links_client;
CREATE INDEX stripe_links_owner ON stripe_links (owner_id);

-- No number is ever reserved: allocation takes an AVAILABLE number straight to ASSIGNED. (The
-- status CHECK still lists RESERVED; nothing writes it.)
ALTER TABLE pool_numbers DROP COLUMN reserved_at;

-- Who held a number until it went to quarantine: an owner who pays again before the quarantine
-- ends gets their own number back, and their call forwarding still points at it.
ALTER TABLE pool_numbers ADD COLUMN last_owner_id TEXT REFERENCES owners (id);
CREATE INDEX pool_numbers_last_owner ON pool_numbers (last_owner_id) WHERE status = 'QUARANTINED';
