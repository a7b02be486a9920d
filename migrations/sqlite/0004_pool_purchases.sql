-- Numbers the pool keeper bought from Twilio, one row per purchase, kept even when the purchase is
-- rolled back (released): the daily purchase cap counts these rows, so it holds across restarts,
-- and a number we paid for can always be traced by its sid.
CREATE TABLE pool_purchases (
    twilio_sid   TEXT PRIMARY KEY NOT NULL,
    e164         TEXT NOT NULL,
    purchased_at TEXT NOT NULL,
    released_at  TEXT
) STRICT;

CREATE INDEX pool_purchases_purchased_at ON pool_purchases (purchased_at);
