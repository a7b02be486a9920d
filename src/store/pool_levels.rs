//! The pool level each country was last seen at (`pool_levels`), for the pool keeper's low-water
//! check. The same SQL on both back ends.

/// Stores a country's level and returns `low` only when it changed (or was first seen): the
/// conditional upsert takes the row's lock, so of two replicas seeing the same crossing, exactly
/// one gets a row back.
pub(super) const NOTE_LEVEL: &str = "INSERT INTO pool_levels (country, low, available, changed_at) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (country) DO UPDATE SET low = excluded.low, available = excluded.available, \
         changed_at = excluded.changed_at \
     WHERE pool_levels.low <> excluded.low \
     RETURNING low";
