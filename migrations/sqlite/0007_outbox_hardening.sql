-- Texts and calls given up (or reported failed by Twilio), for the admin list of failed messages,
-- newest first: reads only the failed part of the outbox, however long its history.
CREATE INDEX outbound_messages_failed ON outbound_messages (id) WHERE status = 'failed';
