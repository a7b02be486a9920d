//! The number pool: allocation (`SKIP LOCKED` on PostgreSQL, so concurrent allocations pass each
//! other), numbers added, quarantine and its end, and the waitlist served first come, first served.

use super::row::corrupt;
use super::{PoolStats, Result};

/// The pool number the owner `$owner` (a parameter) holds, or held until it went to quarantine
/// (an assigned one first).
macro_rules! held_by_owner {
    ($owner:literal) => {
        concat!(
            "owner_id = ",
            $owner,
            " OR (status = 'QUARANTINED' AND last_owner_id = ",
            $owner,
            ") ORDER BY status LIMIT 1"
        )
    };
}

/// Folds the `(status, count)` rows of [`POOL_COUNTS`].
pub(super) fn pool_stats(counts: Vec<(String, i64)>) -> Result<PoolStats> {
    let mut stats = PoolStats::default();
    for (status, count) in counts {
        let slot = match status.as_str() {
            "AVAILABLE" => &mut stats.available,
            "ASSIGNED" => &mut stats.assigned,
            "QUARANTINED" => &mut stats.quarantined,
            _ => {
                return Err(corrupt(
                    "pool_numbers",
                    format!("{count} rows with status {status:?}"),
                ));
            }
        };
        *slot = count;
        stats.total += count;
    }
    Ok(stats)
}

/// The first free number of country `$1` (the longest in the pool first); with `in_area`, of
/// area code `$4` first: COALESCE runs the country's search only when the area's finds nothing.
///
/// An owner without an area code (every owner outside the US) takes the country's search alone,
/// never the area's with a NULL: PostgreSQL folds `area_code = NULL` away when it plans for the
/// values given, so its plan for any value can look dearer and the whole allocation be planned
/// again on every payment; and that plan for any value, on a table without statistics yet,
/// walked every free number looking for the NULL.
macro_rules! first_free {
    ($skip_locked:literal) => {
        concat!(
            "(SELECT e164 FROM pool_numbers \
              WHERE status = 'AVAILABLE' AND country = $1 \
              ORDER BY created_at, e164 LIMIT 1",
            $skip_locked,
            ")"
        )
    };
    (in_area, $skip_locked:literal) => {
        concat!(
            "COALESCE( \
                 (SELECT e164 FROM pool_numbers \
                  WHERE status = 'AVAILABLE' AND country = $1 AND area_code = $4 \
                  ORDER BY created_at, e164 LIMIT 1",
            $skip_locked,
            "), ",
            crate::store::pool::first_free!($skip_locked),
            ")"
        )
    };
}
pub(super) use first_free;

/// PostgreSQL's allocation in one statement, country `$1`, owner `$2`, at `$3` (and area code
/// `$4` in [`ALLOCATE_ONCE_IN_AREA`]): what the owner holds ([`HELD`]); their own number back
/// from quarantine if that is what they held ([`TAKE_BACK`]); else, holding nothing, the first
/// free number ([`first_free!`]). Run with the owner locked, it sees every allocation for them
/// that committed. When a take-back finds the number no longer theirs (its quarantine ended
/// meanwhile), `returned` and `taken` are both NULL and the caller allocates.
macro_rules! allocate_once {
    ($($first_free:tt)*) => {
        concat!(
            "WITH held AS (SELECT e164, status FROM pool_numbers WHERE ",
            held_by_owner!("$2"),
            "), \
             returned AS ( \
                 UPDATE pool_numbers \
                 SET status = 'ASSIGNED', owner_id = $2, last_owner_id = NULL, \
                     quarantined_until = NULL, assigned_at = $3, updated_at = $3 \
                 WHERE e164 = (SELECT e164 FROM held WHERE status = 'QUARANTINED') \
                     AND status = 'QUARANTINED' AND last_owner_id = $2 \
                 RETURNING e164), \
             taken AS ( \
                 UPDATE pool_numbers \
                 SET status = 'ASSIGNED', owner_id = $2, assigned_at = $3, updated_at = $3 \
                 WHERE NOT EXISTS (SELECT 1 FROM held) AND e164 = ",
            $($first_free)*,
            " RETURNING e164) \
             SELECT (SELECT e164 FROM held) AS held, (SELECT status FROM held) AS held_status, \
                 (SELECT e164 FROM returned) AS returned, (SELECT e164 FROM taken) AS taken"
        )
    };
}

/// [`allocate_once!`] for an owner without an area code.
pub(super) const ALLOCATE_ONCE: &str = allocate_once!(first_free!(" FOR UPDATE SKIP LOCKED"));

/// [`allocate_once!`] for an owner with an area code, `$4`.
pub(super) const ALLOCATE_ONCE_IN_AREA: &str =
    allocate_once!(first_free!(in_area, " FOR UPDATE SKIP LOCKED"));

/// The number the owner holds, or held until it went to quarantine.
pub(super) const HELD: &str = concat!(
    "SELECT e164, status FROM pool_numbers WHERE ",
    held_by_owner!("$1")
);

/// An owner's own quarantined number, back to them.
pub(super) const TAKE_BACK: &str = "UPDATE pool_numbers \
    SET status = 'ASSIGNED', owner_id = $2, last_owner_id = NULL, \
        quarantined_until = NULL, assigned_at = $3, updated_at = $3 \
    WHERE e164 = $1 AND status = 'QUARANTINED' AND last_owner_id = $2";

/// A number added as AVAILABLE; one already in the pool is left as it is.
pub(super) const ADD: &str = "INSERT INTO pool_numbers \
        (e164, status, country, area_code, twilio_sid, created_at, \
         updated_at) \
    VALUES ($1, 'AVAILABLE', $2, $3, $4, $5, $5) \
    ON CONFLICT (e164) DO NOTHING";

/// A number to quarantine, detached from its owner (remembered when `$4`).
pub(super) const QUARANTINE: &str = "UPDATE pool_numbers \
    SET status = 'QUARANTINED', \
        last_owner_id = CASE WHEN $4 THEN COALESCE(owner_id, last_owner_id) END, \
        owner_id = NULL, \
        assigned_at = NULL, quarantined_until = $2, updated_at = $3 \
    WHERE e164 = $1";

/// Numbers whose quarantine has ended, back to AVAILABLE.
pub(super) const END_QUARANTINES: &str = "UPDATE pool_numbers \
    SET status = 'AVAILABLE', quarantined_until = NULL, last_owner_id = NULL, \
        updated_at = $1 \
    WHERE status = 'QUARANTINED' AND quarantined_until <= $1";

/// The statements that take row locks, in one dialect: `$for_update` ends a SELECT of rows the
/// transaction goes on to change, `$skip_locked` one that takes any free rows of many.
macro_rules! locking_statements {
    ($for_update:literal, $skip_locked:literal) => {
        /// The first free number of country `$1`, taken for owner `$2` at `$3`.
        pub(in crate::store) const ALLOCATE: &str = concat!(
            "UPDATE pool_numbers \
                 SET status = 'ASSIGNED', owner_id = $2, assigned_at = $3, updated_at = $3 \
                 WHERE e164 = ",
            crate::store::pool::first_free!($skip_locked),
            " RETURNING e164"
        );
        /// [`ALLOCATE`] of area code `$4` first.
        pub(in crate::store) const ALLOCATE_IN_AREA: &str = concat!(
            "UPDATE pool_numbers \
                 SET status = 'ASSIGNED', owner_id = $2, assigned_at = $3, updated_at = $3 \
                 WHERE e164 = ",
            crate::store::pool::first_free!(in_area, $skip_locked),
            " RETURNING e164"
        );
        /// A pool number, locked, with its owner.
        pub(in crate::store) const LOCK_NUMBER: &str = concat!(
            "SELECT owner_id FROM pool_numbers WHERE e164 = $1",
            $for_update
        );
        /// The longest-waiting owners of a country, locked, first come first served.
        pub(in crate::store) const LOCK_WAITLIST: &str = concat!(
            "SELECT ",
            crate::store::row::owner_columns!(),
            " FROM owners \
                 WHERE gate = 'awaiting_number' AND country = $1 \
                 ORDER BY waitlisted_at NULLS LAST, id LIMIT $2",
            $skip_locked
        );
    };
}

super::common::per_dialect!();

/// This area's [`Tx`](super::Tx) methods, expanded by `impl_tx!` (in `common.rs`) inside each back
/// end's `impl Tx`, where its names are in scope; `dialect` is
/// the back end's module of locking statements (`postgres` or `sqlite`).
macro_rules! tx_methods {
    (dialect = $dialect:ident) => {
        async fn allocate_number(
            &mut self,
            owner_id: &OwnerId,
            country: Country,
            area_code: Option<&str>,
            now: DateTime<Utc>,
        ) -> Result<Allocation> {
            // The caller holds the owner's row lock (every event takes it first), so two
            // allocations for one owner queue up there rather than race to two numbers,
            // and this read, begun after the lock was granted, sees what the other committed.
            if $crate::store::$dialect::DATA_MODIFYING_CTES {
                let (held, held_status, returned, taken): (
                    Option<String>,
                    Option<String>,
                    Option<String>,
                    Option<String>,
                ) = match area_code {
                    None => sqlx::query_as($crate::store::pool::ALLOCATE_ONCE)
                        .bind(country.code())
                        .bind(owner_id.as_str())
                        .bind(now),
                    Some(area_code) => sqlx::query_as($crate::store::pool::ALLOCATE_ONCE_IN_AREA)
                        .bind(country.code())
                        .bind(owner_id.as_str())
                        .bind(now)
                        .bind(area_code),
                }
                .fetch_one(&mut *self.0)
                .await?;
                let number = |e164: &str| row::phone("pool_numbers", || "e164".into(), e164);
                match (held, held_status.as_deref(), returned, taken) {
                    (_, _, Some(e164), _) => return Ok(Allocation::Returned(number(&e164)?)),
                    (_, _, _, Some(e164)) => return Ok(Allocation::Allocated(number(&e164)?)),
                    (Some(e164), Some(status), None, None) if status != "QUARANTINED" => {
                        return Ok(Allocation::AlreadyAssigned(number(&e164)?));
                    }
                    (None, _, None, None) => return Ok(Allocation::PoolEmpty),
                    // Their quarantined number went back to the pool meanwhile: a free one.
                    _ => {}
                }
            }
            // The number they hold, or held until it went to quarantine: an owner who
            // pays again gets it back.
            let found: Option<(String, String)> = sqlx::query_as($crate::store::pool::HELD)
                .bind(owner_id.as_str())
                .fetch_optional(&mut *self.0)
                .await?;
            let (held, status) = found.unzip();
            if let Some(e164) = held {
                let number = row::phone("pool_numbers", || "e164".into(), &e164)?;
                if status.as_deref() != Some("QUARANTINED") {
                    return Ok(Allocation::AlreadyAssigned(number));
                }
                // Still theirs only if the quarantine has not ended meanwhile (the
                // keeper may have made it AVAILABLE, and someone else taken it).
                let returned = sqlx::query($crate::store::pool::TAKE_BACK)
                    .bind(&e164)
                    .bind(owner_id.as_str())
                    .bind(now)
                    .execute(&mut *self.0)
                    .await?
                    .rows_affected();
                if returned == 1 {
                    return Ok(Allocation::Returned(number));
                }
            }

            // Takes the first free number of the owner's area code or, failing that, of
            // their country, in one statement: COALESCE runs the second search only when
            // the first finds nothing.
            let picked: Option<String> = match area_code {
                None => sqlx::query_scalar($crate::store::pool::$dialect::ALLOCATE)
                    .bind(country.code())
                    .bind(owner_id.as_str())
                    .bind(now),
                Some(area_code) => {
                    sqlx::query_scalar($crate::store::pool::$dialect::ALLOCATE_IN_AREA)
                        .bind(country.code())
                        .bind(owner_id.as_str())
                        .bind(now)
                        .bind(area_code)
                }
            }
            .fetch_optional(&mut *self.0)
            .await?;
            match picked {
                Some(e164) => Ok(Allocation::Allocated(row::phone(
                    "pool_numbers",
                    || "e164".into(),
                    &e164,
                )?)),
                None => Ok(Allocation::PoolEmpty),
            }
        }

        async fn add_numbers(
            &mut self,
            numbers: &[NewPoolNumber],
            now: DateTime<Utc>,
        ) -> Result<u64> {
            let mut added = 0;
            for number in numbers {
                added += sqlx::query($crate::store::pool::ADD)
                    .bind(number.e164.as_str())
                    .bind(number.e164.country().code())
                    .bind(number.e164.area_code())
                    .bind(number.twilio_sid.as_deref())
                    .bind(now)
                    .execute(&mut *self.0)
                    .await?
                    .rows_affected();
            }
            Ok(added)
        }

        async fn quarantine_number(
            &mut self,
            e164: &PhoneNumber,
            until: DateTime<Utc>,
            keep_for_owner: bool,
            now: DateTime<Utc>,
        ) -> Result<QuarantineOutcome> {
            let held: Option<Option<String>> =
                sqlx::query_scalar($crate::store::pool::$dialect::LOCK_NUMBER)
                    .bind(e164.as_str())
                    .fetch_optional(&mut *self.0)
                    .await?;
            let Some(owner_id) = held else {
                return Ok(QuarantineOutcome::NotInPool);
            };
            sqlx::query($crate::store::pool::QUARANTINE)
                .bind(e164.as_str())
                .bind(until)
                .bind(now)
                .bind(keep_for_owner)
                .execute(&mut *self.0)
                .await?;
            let owner_id = owner_id
                .map(|id| row::owner_id("pool_numbers", id))
                .transpose()?;
            Ok(QuarantineOutcome::Quarantined { owner_id })
        }

        async fn note_pool_level(
            &mut self,
            country: Country,
            low: bool,
            available: i64,
            now: DateTime<Utc>,
        ) -> Result<Option<bool>> {
            Ok(sqlx::query_scalar($crate::store::pool_levels::NOTE_LEVEL)
                .bind(country.code())
                .bind(low)
                .bind(available)
                .bind(now)
                .fetch_optional(&mut *self.0)
                .await?)
        }

        async fn end_quarantines(&mut self, now: DateTime<Utc>) -> Result<u64> {
            let ended = sqlx::query($crate::store::pool::END_QUARANTINES)
                .bind(now)
                .execute(&mut *self.0)
                .await?
                .rows_affected();
            Ok(ended)
        }

        async fn lock_waitlist(&mut self, country: Country, limit: i64) -> Result<Vec<Owner>> {
            // The transaction's own writes first, so the read sees them.
            self.flush().await?;
            let rows: Vec<OwnerRow> = sqlx::query_as($crate::store::pool::$dialect::LOCK_WAITLIST)
                .bind(country.code())
                .bind(limit)
                .fetch_all(&mut *self.0)
                .await?;
            rows.into_iter().map(OwnerRow::into_owner).collect()
        }
    };
}
pub(super) use tx_methods;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn unknown_pool_status_is_corrupt() {
        let err = pool_stats(vec![("LOST".into(), 1)]).unwrap_err();
        assert!(matches!(
            err,
            StoreError::Corrupt {
                table: "pool_numbers",
                ..
            }
        ));
        let stats = pool_stats(vec![("AVAILABLE".into(), 3), ("ASSIGNED".into(), 2)]).unwrap();
        assert_eq!((stats.total, stats.available, stats.assigned), (5, 3, 2));
    }
}
