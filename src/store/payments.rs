//! Payments: the Stripe objects that tie later events to an owner, and every provider's webhook
//! events, stored once by (provider, id) with what became of them.

/// A provider's event, stored once by (provider, id). A macro, so the statement below can build
/// on it with `concat!`.
macro_rules! insert_event {
    () => {
        "INSERT INTO webhook_events (provider, event_id, event_type, status, payload, received_at) \
         VALUES ($1, $2, $3, 'received', $4, $5) ON CONFLICT (provider, event_id) DO NOTHING"
    };
}

pub(super) const INSERT_EVENT: &str = insert_event!();

/// PostgreSQL's read at the start of a payment: [`INSERT_EVENT`], and the owner `$6` (the
/// checkout's `client_reference_id`), locked, in one statement.
pub(super) const INSERT_EVENT_LOCKING_OWNER: &str =
    super::owners::claim_then_lock!(insert_event!(), "id = $6");

/// The statements that take row locks, in one dialect: `$for_update` ends a SELECT of rows the
/// transaction goes on to change, `$skip_locked` one that takes any free rows of many.
macro_rules! locking_statements {
    ($for_update:literal, $skip_locked:literal) => {
        /// The owner a Stripe object belongs to, locked.
        pub(in crate::store) const LOCK_OWNER_BY_STRIPE: &str = concat!(
                "SELECT ",
                crate::store::row::owner_columns!(),
                " FROM owners WHERE id = \
                     (SELECT owner_id FROM stripe_links WHERE kind = $1 AND stripe_id = $2)",
                $for_update
            );
        /// An event's stored status, locked.
        pub(in crate::store) const LOCK_EVENT_STATUS: &str = concat!(
                "SELECT status FROM webhook_events WHERE provider = $1 AND event_id = $2",
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
        async fn link_stripe(
            &mut self,
            owner_id: &OwnerId,
            kind: StripeKind,
            stripe_id: &str,
            now: DateTime<Utc>,
        ) -> Result<()> {
            self.1.link(owner_id.as_str(), kind, stripe_id, now);
            Ok(())
        }

        async fn lock_owner_by_stripe(
            &mut self,
            kind: StripeKind,
            stripe_id: &str,
        ) -> Result<Option<Owner>> {
            // The transaction's own writes first, so the read sees them.
            self.flush().await?;
            sqlx::query_as::<_, OwnerRow>($crate::store::payments::$dialect::LOCK_OWNER_BY_STRIPE)
                .bind(kind.as_str())
                .bind(stripe_id)
                .fetch_optional(&mut *self.0)
                .await?
                .map(OwnerRow::into_owner)
                .transpose()
        }

        // --- provider webhook events ---------------------------------------------

        async fn insert_webhook_event(&mut self, event: &NewWebhookEvent<'_>) -> Result<bool> {
            let inserted = sqlx::query($crate::store::payments::INSERT_EVENT)
                .bind(event.provider)
                .bind(event.event_id)
                .bind(event.event_type)
                .bind(Json(event.payload))
                .bind(event.received_at)
                .execute(&mut *self.0)
                .await?
                .rows_affected();
            Ok(inserted == 1)
        }

        async fn insert_webhook_event_locking(
            &mut self,
            event: &NewWebhookEvent<'_>,
            owner_id: &OwnerId,
        ) -> Result<(bool, Option<Owner>)> {
            if !$crate::store::$dialect::DATA_MODIFYING_CTES {
                let new = self.insert_webhook_event(event).await?;
                // A retry is mostly a duplicate, which needs no owner; one to process again
                // locks them then.
                let owner = match new {
                    true => self.lock_owner(owner_id).await?,
                    false => None,
                };
                return Ok((new, owner));
            }
            self.flush().await?;
            let row = sqlx::query($crate::store::payments::INSERT_EVENT_LOCKING_OWNER)
                .bind(event.provider)
                .bind(event.event_id)
                .bind(event.event_type)
                .bind(Json(event.payload))
                .bind(event.received_at)
                .bind(owner_id.as_str())
                .fetch_one(&mut *self.0)
                .await?;
            $crate::store::row::claimed_and_owner(&row)
        }

        async fn webhook_event_status(
            &mut self,
            provider: &str,
            event_id: &str,
        ) -> Result<Option<String>> {
            Ok(
                sqlx::query_scalar($crate::store::payments::$dialect::LOCK_EVENT_STATUS)
                    .bind(provider)
                    .bind(event_id)
                    .fetch_optional(&mut *self.0)
                    .await?,
            )
        }

        async fn set_webhook_event_outcome(
            &mut self,
            provider: &str,
            event_id: &str,
            outcome: EventOutcome,
            error: Option<&str>,
        ) -> Result<()> {
            // The contract passes no clock here; processed_at is only for operators.
            self.1.event(provider, event_id, outcome, error, Utc::now());
            Ok(())
        }
    };
}
pub(super) use tx_methods;
