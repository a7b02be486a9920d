-- Numbers the pool keeper may have bought: the purchase got no clear answer (timeout, 5xx) and
-- looking the number up on Twilio failed too. Each keeper run looks them up again, first: a number
-- found is ours (kept, or released, as any purchase), one not found was never bought. Until then
-- the row is all that says we may be paying for it, and it counts towards the daily purchase cap.
CREATE TABLE uncertain_purchases (
    e164            text PRIMARY KEY,
    attempted_at    timestamptz NOT NULL,
    last_checked_at timestamptz,
    checks          integer NOT NULL DEFAULT 0
);
