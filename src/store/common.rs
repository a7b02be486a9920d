//! What the two back ends share: the `Store` reads, and [`impl_tx!`], which builds each back end's
//! `impl Tx` from the areas' methods (`inbound`, `owners`, `outbox`, `pool`, `calls`,
//! `payments`). The dialects differ only in row locks, so each back end's own file keeps just
//! connecting, migrating and beginning a transaction.

pub(super) const OWNER_BY_PHONE: &str = concat!(
    "SELECT ",
    super::row::owner_columns!(),
    " FROM owners WHERE owner_phone = $1"
);

pub(super) const LATEST_OUTBOUND_ID: &str = "SELECT COALESCE(MAX(id), 0) FROM outbound_messages";

pub(super) const OUTBOUND_AFTER: &str = concat!(
    "SELECT ",
    super::row::outbound_columns!(),
    " FROM outbound_messages WHERE id > $1 ORDER BY id"
);

/// Reads at most `$2` entries of the partial index on available numbers; the ORDER BY keeps the
/// planner on that index when few are left.
pub(super) const AVAILABLE_CAPPED: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM pool_numbers \
     WHERE status = 'AVAILABLE' AND country = $1 ORDER BY created_at, e164 LIMIT $2) AS free";

pub(super) const OWNERS_BY_STATE: &str = "SELECT state, COUNT(*) FROM owners GROUP BY state";

pub(super) const POOL_COUNTS: &str = "SELECT status, COUNT(*) FROM pool_numbers GROUP BY status";

/// The `Store` reads, the same SQL on both back ends: expands inside each back end's `impl Store`
/// (which has a `conn()` giving a connection of its own driver).
macro_rules! store_reads {
    () => {
        async fn owner_by_phone(
            &self,
            phone: &$crate::domain::PhoneNumber,
        ) -> $crate::store::Result<Option<$crate::store::Owner>> {
            use $crate::store::{common, row::OwnerRow};
            sqlx::query_as::<_, OwnerRow>(common::OWNER_BY_PHONE)
                .bind(phone.as_str())
                .fetch_optional(&mut *self.conn().await?)
                .await?
                .map(OwnerRow::into_owner)
                .transpose()
        }

        async fn pool_stats(&self) -> $crate::store::Result<$crate::store::PoolStats> {
            let counts = sqlx::query_as($crate::store::common::POOL_COUNTS)
                .fetch_all(&mut *self.conn().await?)
                .await?;
            $crate::store::pool::pool_stats(counts)
        }

        async fn available_numbers(
            &self,
            country: $crate::domain::Country,
            cap: i64,
        ) -> $crate::store::Result<i64> {
            Ok(sqlx::query_scalar($crate::store::common::AVAILABLE_CAPPED)
                .bind(country.code())
                .bind(cap)
                .fetch_one(&mut *self.conn().await?)
                .await?)
        }

        async fn owners_by_state(&self) -> $crate::store::Result<Vec<(String, i64)>> {
            Ok(sqlx::query_as($crate::store::common::OWNERS_BY_STATE)
                .fetch_all(&mut *self.conn().await?)
                .await?)
        }

        async fn latest_outbound_id(&self) -> $crate::store::Result<i64> {
            Ok(
                sqlx::query_scalar($crate::store::common::LATEST_OUTBOUND_ID)
                    .fetch_one(&mut *self.conn().await?)
                    .await?,
            )
        }

        async fn outbound_after(
            &self,
            id: i64,
        ) -> $crate::store::Result<Vec<$crate::store::OutboundMessage>> {
            use $crate::store::{common, row::OutboundRow};
            let rows: Vec<OutboundRow> = sqlx::query_as(common::OUTBOUND_AFTER)
                .bind(id)
                .fetch_all(&mut *self.conn().await?)
                .await?;
            rows.into_iter().map(OutboundRow::into_message).collect()
        }
    };
}
pub(super) use store_reads;

/// Declares an area's locking statements (its `locking_statements!`) once per dialect: in module
/// `postgres` with PostgreSQL's row locks (concurrent transactions queue up on a locked row, or
/// pass it by), in module `sqlite` without (its transactions begin with `BEGIN IMMEDIATE` and hold
/// its one write lock already).
macro_rules! per_dialect {
    () => {
        pub(super) mod postgres {
            locking_statements!(" FOR UPDATE", " FOR UPDATE SKIP LOCKED");
        }

        pub(super) mod sqlite {
            locking_statements!("", "");
        }
    };
}
pub(super) use per_dialect;

/// Implements [`Tx`](super::Tx) for a back end's transaction type, a newtype over
/// `sqlx::Transaction<'static, DB>`, from each area's methods. Both dialects run the same SQL but
/// for row locks: each area declares its locking statements once per dialect, in modules named
/// `postgres` (`FOR UPDATE`, so concurrent transactions touching the same row queue up, or
/// `FOR UPDATE SKIP LOCKED`, so concurrent allocations and outbox workers pass each other) and
/// `sqlite` (no lock clause: its transactions begin with `BEGIN IMMEDIATE` and so already hold
/// the database's one write lock). `dialect` names which.
macro_rules! impl_tx {
    ($tx:ty, dialect = $dialect:ident $(,)?) => {
        // A block, so these imports don't leak into the back end's module.
        const _: () = {
            use chrono::{DateTime, Utc};
            use sqlx::types::Json;

            use $crate::domain::{Country, OwnerId, PhoneNumber};
            use $crate::store::row::{self, OutboundRow, OwnerRow};
            use $crate::store::{
                Allocation, Claim, EventOutcome, NewCall, NewInbound, NewOutbound, NewPoolNumber,
                NewWebhookEvent, OutboundMessage, OutboundStatus, Owner, OwnerKey,
                QuarantineOutcome, Result, StripeKind, Transition, Tx,
            };

            impl $crate::store::TestTx for $tx {
                async fn rollback(self) -> Result<()> {
                    self.0.rollback().await?;
                    Ok(())
                }
            }

            impl Tx for $tx {
                async fn commit(mut self) -> Result<()> {
                    self.flush().await?;
                    self.0.commit().await?;
                    self.2.committed();
                    Ok(())
                }

                $crate::store::inbound::tx_methods!(dialect = $dialect);
                $crate::store::owners::tx_methods!(dialect = $dialect);
                $crate::store::outbox::tx_methods!(dialect = $dialect);
                $crate::store::pool::tx_methods!(dialect = $dialect);
                $crate::store::calls::tx_methods!(dialect = $dialect);
                $crate::store::payments::tx_methods!(dialect = $dialect);
            }
        };
    };
}
pub(super) use impl_tx;
