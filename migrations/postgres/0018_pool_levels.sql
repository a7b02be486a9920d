-- The pool level of each country as the pool keeper last saw it, so that `POOL_LOW` is logged once
-- when a country crosses below the low-water mark, by whichever replica sees it first.
CREATE TABLE pool_levels (
    country    text PRIMARY KEY,
    low        boolean NOT NULL,
    -- AVAILABLE numbers when the level last changed, counted up to the low-water mark only.
    available  bigint NOT NULL,
    changed_at timestamptz NOT NULL
);
