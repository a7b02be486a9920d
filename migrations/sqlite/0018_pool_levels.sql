-- The pool level of each country as the pool keeper last saw it, so that `POOL_LOW` is logged once
-- when a country crosses below the low-water mark (migrations/postgres mirrors it).
CREATE TABLE pool_levels (
    country    TEXT PRIMARY KEY NOT NULL,
    low        INTEGER NOT NULL CHECK (low IN (0, 1)),
    -- AVAILABLE numbers when the level last changed, counted up to the low-water mark only.
    available  INTEGER NOT NULL,
    changed_at TEXT NOT NULL
) STRICT;
