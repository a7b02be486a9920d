-- The business owner is called `owner` everywhere (the code said `client`, which is also Twilio's
-- and the HTTP client): the table, every column naming it, and the indexes and constraints after
-- them. Renames only: no row is rewritten.
ALTER TABLE clients RENAME TO owners;

ALTER TABLE inbound_messages RENAME COLUMN client_id TO owner_id;
ALTER TABLE state_history RENAME COLUMN client_id TO owner_id;
ALTER TABLE outbound_messages RENAME COLUMN client_id TO owner_id;
ALTER TABLE pool_numbers RENAME COLUMN client_id TO owner_id;
ALTER TABLE calls RENAME COLUMN client_id TO owner_id;
ALTER TABLE stripe_links RENAME COLUMN client_id TO owner_id;
ALTER TABLE reminder_timers RENAME COLUMN client_id TO owner_id;
ALTER TABLE reminders_sent RENAME COLUMN client_id TO owner_id;

ALTER INDEX clients_waitlist RENAME TO owners_waitlist;
ALTER INDEX clients_verifying RENAME TO owners_verifying;
ALTER INDEX clients_created RENAME TO owners_created;
ALTER INDEX inbound_messages_client RENAME TO inbound_messages_owner;
ALTER INDEX state_history_client RENAME TO state_history_owner;
ALTER INDEX outbound_messages_client RENAME TO outbound_messages_owner;
ALTER INDEX calls_client RENAME TO calls_owner;
ALTER INDEX stripe_links_client RENAME TO stripe_links_owner;

-- Constraints PostgreSQL named after the old table and columns (clients_pkey,
-- pool_numbers_client_id_key, calls_client_id_fkey, ...); renaming a primary key or unique
-- constraint renames its index too.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT conrelid::regclass AS tbl, conname
        FROM pg_constraint
        WHERE connamespace = current_schema()::regnamespace AND conname LIKE '%client%'
    LOOP
        EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I',
            c.tbl, c.conname, replace(replace(c.conname, 'clients', 'owners'), 'client', 'owner'));
    END LOOP;
END
$$;

-- No number is ever reserved: allocation takes an AVAILABLE number straight to ASSIGNED. (The
-- status CHECK still lists RESERVED; nothing writes it.)
ALTER TABLE pool_numbers DROP COLUMN reserved_at;

-- Who held a number until it went to quarantine: an owner who pays again before the quarantine
-- ends gets their own number back, and their call forwarding still points at it.
ALTER TABLE pool_numbers ADD COLUMN last_owner_id text REFERENCES owners (id);
CREATE INDEX pool_numbers_last_owner ON pool_numbers (last_owner_id) WHERE status = 'QUARANTINED';
