//! Owners: found (or created, for a first text) and locked for the event's transaction; their
//! changes and state history are held writes (see `write.rs`).

/// A new owner; two first texts from one phone: the second waits for the first transaction, then
/// does nothing.
pub(super) const CREATE: &str = "INSERT INTO owners (id, owner_phone, country, locale, state, gate, \
        business_type, location, business_name, owner_name, notify, \
        phone_type, misses, opted_out, payment_active, paid_at, \
        twilio_number, waitlisted_at, verify_started_at, created_at, \
        updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
        $15, $16, $17, $18, $19, $20, $21) \
    ON CONFLICT (owner_phone) DO NOTHING";

/// PostgreSQL's one-statement read at the start of an event: `$claim` (an `INSERT ... ON CONFLICT
/// DO NOTHING` of the provider's id), then the owner matching `$owner`, locked. One row: `claimed`
/// (1 when this event's insert took, 0 for a retry) and the owner's columns (all NULL when no
/// owner matches). The claim runs first (the count reads all of it before the join looks for
/// the owner), so two deliveries of one event queue on the claim, never on the owner's lock in
/// the other order. A lock that waited returns the row as the other transaction committed it.
///
/// `with_timer` reads the owner's reminder timer too, locked after the owner. Its `FOR UPDATE`
/// is what makes it safe in one statement: the statement's snapshot is taken before the owner's
/// lock is waited for, but a locked row is read as the latest committed version, so a timer
/// rewritten by an event that held the owner meanwhile is seen as it now is. (Every writer of a
/// timer holds its owner's row. A timer first created meanwhile is not seen; it was created by a
/// text, as not sent and not expired, which reads the same as none.)
macro_rules! claim_then_lock {
    ($claim:expr, $owner:literal) => {
        $crate::store::owners::claim_then_lock!(@ $claim, $owner, "", "")
    };
    ($claim:expr, $owner:literal, with_timer) => {
        $crate::store::owners::claim_then_lock!(
            @ $claim,
            $owner,
            ", t.*",
            " LEFT JOIN LATERAL (SELECT owner_id AS timer_owner_id, state AS timer_state, \
                 sent AS timer_sent, anchor_at AS timer_anchor_at, due_at AS timer_due_at, \
                 expired_at AS timer_expired_at \
             FROM reminder_timers WHERE owner_id = o.id FOR UPDATE) AS t ON true"
        )
    };
    (@ $claim:expr, $owner:literal, $more:literal, $join:literal) => {
        concat!(
            "WITH claim AS (",
            $claim,
            " RETURNING 1) \
             SELECT c.claimed, o.*",
            $more,
            " FROM (SELECT COUNT(*) AS claimed FROM claim) AS c \
             LEFT JOIN LATERAL (SELECT ",
            crate::store::row::owner_columns!(),
            " FROM owners WHERE ",
            $owner,
            " FOR UPDATE) AS o ON true",
            $join
        )
    };
}
pub(super) use claim_then_lock;

/// The statements that take row locks, in one dialect: `$for_update` ends a SELECT of rows the
/// transaction goes on to change, `$skip_locked` one that takes any free rows of many.
macro_rules! locking_statements {
    ($for_update:literal, $skip_locked:literal) => {
        /// The owner of a phone, locked.
        pub(in crate::store) const LOCK_BY_PHONE: &str = concat!(
            "SELECT ",
            crate::store::row::owner_columns!(),
            " FROM owners WHERE owner_phone = $1",
            $for_update
        );
        /// An owner by id, locked.
        pub(in crate::store) const LOCK_BY_ID: &str = concat!(
            "SELECT ",
            crate::store::row::owner_columns!(),
            " FROM owners WHERE id = $1",
            $for_update
        );
        /// The owner holding a pool number, locked.
        pub(in crate::store) const LOCK_BY_NUMBER: &str = concat!(
            "SELECT ",
            crate::store::row::owner_columns!(),
            " FROM owners WHERE twilio_number = $1",
            $for_update
        );
    };
}

super::common::per_dialect!();

/// This area's [`Tx`](super::Tx) methods, expanded by `impl_tx!` (in `common.rs`) inside each back
/// end's `impl Tx`, where its names are in scope; `dialect` is
/// the back end's module of locking statements (`postgres` or `sqlite`).
macro_rules! tx_methods {
    (dialect = $dialect:ident) => {
        async fn lock_or_create_owner(
            &mut self,
            phone: &PhoneNumber,
            new: impl FnOnce() -> Owner + Send,
        ) -> Result<(Owner, bool)> {
            // Nearly every text is from an owner we know: look before inserting.
            if let Some(owner) = self.lock_owner_by_phone(phone).await? {
                return Ok((owner, false));
            }
            self.create_and_lock_owner(phone, new).await
        }

        async fn create_and_lock_owner(
            &mut self,
            phone: &PhoneNumber,
            new: impl FnOnce() -> Owner + Send,
        ) -> Result<(Owner, bool)> {
            self.flush().await?;
            let lock = $crate::store::owners::$dialect::LOCK_BY_PHONE;
            let new = new();
            debug_assert_eq!(&new.owner_phone, phone);
            // Two first texts from one new phone: the second INSERT waits for the first
            // transaction, then does nothing, and the SELECT finds the first one's row.
            let created = sqlx::query($crate::store::owners::CREATE)
                .bind(new.id.as_str())
                .bind(new.owner_phone.as_str())
                .bind(new.country().code())
                .bind(new.locale.tag())
                .bind(new.state.as_str())
                .bind(new.gate.map(|g| g.as_str()))
                .bind(new.business_type.as_deref())
                .bind(new.location.as_deref())
                .bind(new.business_name.as_deref())
                .bind(new.owner_name.as_deref())
                .bind(new.notify.as_ref().map(|n| n.to_stored()))
                .bind(new.phone_type.map(|p| p.as_str()))
                .bind(new.misses)
                .bind(new.opted_out)
                .bind(new.payment_active)
                .bind(new.paid_at)
                .bind(new.twilio_number.as_ref().map(PhoneNumber::as_str))
                .bind(new.waitlisted_at)
                .bind(new.verify_started_at)
                .bind(new.created_at)
                .bind(new.updated_at)
                .execute(&mut *self.0)
                .await?
                .rows_affected()
                == 1;
            let row: OwnerRow = sqlx::query_as(lock)
                .bind(phone.as_str())
                .fetch_one(&mut *self.0)
                .await?;
            Ok((row.into_owner()?, created))
        }

        async fn lock_owner_by_phone(&mut self, phone: &PhoneNumber) -> Result<Option<Owner>> {
            // The transaction's own writes first, so the read sees them.
            self.flush().await?;
            sqlx::query_as::<_, OwnerRow>($crate::store::owners::$dialect::LOCK_BY_PHONE)
                .bind(phone.as_str())
                .fetch_optional(&mut *self.0)
                .await?
                .map(OwnerRow::into_owner)
                .transpose()
        }

        async fn lock_owner(&mut self, id: &OwnerId) -> Result<Option<Owner>> {
            // The transaction's own writes first, so the read sees them.
            self.flush().await?;
            sqlx::query_as::<_, OwnerRow>($crate::store::owners::$dialect::LOCK_BY_ID)
                .bind(id.as_str())
                .fetch_optional(&mut *self.0)
                .await?
                .map(OwnerRow::into_owner)
                .transpose()
        }

        async fn lock_owner_by_number(
            &mut self,
            twilio_number: &PhoneNumber,
        ) -> Result<Option<Owner>> {
            // The transaction's own writes first, so the read sees them.
            self.flush().await?;
            sqlx::query_as::<_, OwnerRow>($crate::store::owners::$dialect::LOCK_BY_NUMBER)
                .bind(twilio_number.as_str())
                .fetch_optional(&mut *self.0)
                .await?
                .map(OwnerRow::into_owner)
                .transpose()
        }

        async fn save_owner(&mut self, owner: &Owner) -> Result<()> {
            self.1.owner(owner);
            Ok(())
        }

        async fn record_transition(&mut self, t: &Transition<'_>) -> Result<()> {
            self.1.transition(t);
            Ok(())
        }
    };
}
pub(super) use tx_methods;
