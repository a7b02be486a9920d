//! Inbound texts, claimed once by Twilio's `MessageSid`: a retry finds the claim and gets the
//! answer the first delivery recorded, byte for byte.

/// The answer replayed for a duplicate whose first delivery recorded none.
pub(super) const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

/// Claims a `MessageSid`; a concurrent claim of the same sid waits for this transaction, then
/// sees the conflict (or, after a rollback, inserts). A macro, so the statements below can
/// build on it with `concat!`.
macro_rules! claim {
    () => {
        "INSERT INTO inbound_messages (message_sid, from_addr, to_addr, body, received_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_sid) DO NOTHING"
    };
}

pub(super) const CLAIM: &str = claim!();

/// PostgreSQL's read at the start of a text: [`CLAIM`], the owner whose phone is `$6` and their
/// reminder timer, locked, in one statement.
pub(super) const CLAIM_LOCKING_BY_PHONE: &str =
    super::owners::claim_then_lock!(claim!(), "owner_phone = $6", with_timer);

/// As [`CLAIM_LOCKING_BY_PHONE`], for the owner holding the pool number `$6`.
pub(super) const CLAIM_LOCKING_BY_NUMBER: &str =
    super::owners::claim_then_lock!(claim!(), "twilio_number = $6");

/// The answer a claimed message recorded, for its retry.
pub(super) const STORED_RESPONSE: &str =
    "SELECT response FROM inbound_messages WHERE message_sid = $1";

/// The answer a retried text or call gets: what `$sql` (a `STORED_RESPONSE`) reads for `$sid`
/// through the transaction `$tx`, or an empty `<Response/>` if its first delivery recorded none.
/// Read in a statement of its own, after the claim: a claim that waited for the first delivery
/// to commit kept the snapshot it began with, from before that answer was written.
macro_rules! stored_response {
    ($tx:expr, $sql:expr, $sid:expr) => {{
        let response: Option<String> = sqlx::query_scalar($sql)
            .bind($sid)
            .fetch_one(&mut *$tx.0)
            .await?;
        response.unwrap_or_else(|| $crate::store::inbound::EMPTY_TWIML.to_owned())
    }};
}
pub(super) use stored_response;

/// This area's [`Tx`](super::Tx) methods, expanded by `impl_tx!` (in `common.rs`) inside each back
/// end's `impl Tx`, where its names are in scope; `dialect` is
/// the back end's module of locking statements (`postgres` or `sqlite`).
macro_rules! tx_methods {
    (dialect = $dialect:ident) => {
        async fn claim_inbound(&mut self, msg: &NewInbound<'_>) -> Result<Claim> {
            // On PostgreSQL a concurrent claim of the same sid waits here until the
            // first transaction ends, then sees the conflict (or, after a rollback,
            // inserts).
            let inserted = sqlx::query($crate::store::inbound::CLAIM)
                .bind(msg.message_sid)
                .bind(msg.from)
                .bind(msg.to)
                .bind(msg.body)
                .bind(msg.received_at)
                .execute(&mut *self.0)
                .await?
                .rows_affected();
            if inserted == 1 {
                return Ok(Claim::Fresh);
            }
            let response = $crate::store::inbound::stored_response!(
                self,
                $crate::store::inbound::STORED_RESPONSE,
                msg.message_sid
            );
            Ok(Claim::Duplicate { response })
        }

        async fn claim_inbound_locking(
            &mut self,
            msg: &NewInbound<'_>,
            owner: OwnerKey<'_>,
        ) -> Result<(Claim, Option<Owner>)> {
            if !$crate::store::$dialect::DATA_MODIFYING_CTES {
                let claim = self.claim_inbound(msg).await?;
                if matches!(claim, Claim::Duplicate { .. }) {
                    return Ok((claim, None));
                }
                let owner = match owner {
                    OwnerKey::Phone(phone) => self.lock_owner_by_phone(phone).await?,
                    OwnerKey::Number(number) => self.lock_owner_by_number(number).await?,
                };
                return Ok((claim, owner));
            }
            self.flush().await?;
            let owner_key = owner;
            let (sql, key) = match owner {
                OwnerKey::Phone(phone) => ($crate::store::inbound::CLAIM_LOCKING_BY_PHONE, phone),
                OwnerKey::Number(number) => {
                    ($crate::store::inbound::CLAIM_LOCKING_BY_NUMBER, number)
                }
            };
            let row = sqlx::query(sql)
                .bind(msg.message_sid)
                .bind(msg.from)
                .bind(msg.to)
                .bind(msg.body)
                .bind(msg.received_at)
                .bind(key.as_str())
                .fetch_one(&mut *self.0)
                .await?;
            let (claimed, owner) = $crate::store::row::claimed_and_owner(&row)?;
            if claimed {
                if let (OwnerKey::Phone(_), Some(owner)) = (owner_key, &owner) {
                    let timer = $crate::store::reminders::timer_of(&row)?;
                    self.1.timer_read(&owner.id, timer);
                }
                return Ok((Claim::Fresh, owner));
            }
            let response = $crate::store::inbound::stored_response!(
                self,
                $crate::store::inbound::STORED_RESPONSE,
                msg.message_sid
            );
            Ok((Claim::Duplicate { response }, owner))
        }

        async fn finish_inbound(
            &mut self,
            message_sid: &str,
            owner_id: Option<&OwnerId>,
            response: &str,
        ) -> Result<()> {
            self.1
                .inbound(message_sid, owner_id.map(OwnerId::as_str), response);
            Ok(())
        }
    };
}
pub(super) use tx_methods;
