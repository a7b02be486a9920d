//! Calls: inbound calls claimed once by `CallSid`, the verification calls we place and their
//! status callbacks (applied in `SequenceNumber` order), and the verification windows that ran out.

/// Claims a `CallSid`, as `inbound::CLAIM` does a `MessageSid`. A macro, so the statement below
/// can build on it with `concat!`.
macro_rules! claim {
    () => {
        "INSERT INTO calls (call_sid, direction, from_addr, to_addr, forwarded_from, status, \
             is_test_call, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $7) ON CONFLICT (call_sid) DO NOTHING"
    };
}

pub(super) const CLAIM: &str = claim!();

/// PostgreSQL's read at the start of a call: [`CLAIM`], and the owner holding the number called
/// (`$8`), locked, in one statement.
pub(super) const CLAIM_LOCKING_BY_NUMBER: &str =
    super::owners::claim_then_lock!(claim!(), "twilio_number = $8");

/// The TwiML a claimed call was answered with, for its retry.
pub(super) const STORED_RESPONSE: &str = "SELECT response FROM calls WHERE call_sid = $1";

/// A verification call we placed, so its status callbacks have a row to update.
pub(super) const RECORD_VERIFY_CALL: &str = "INSERT INTO calls (call_sid, owner_id, direction, from_addr, to_addr, \
        status, is_test_call, created_at, updated_at) \
    VALUES ($1, $2, 'outbound-api', $3, $4, 'queued', TRUE, $5, $5) \
    ON CONFLICT (call_sid) DO NOTHING";

/// A call status callback: out of order (a lower `SequenceNumber`, or after a final status),
/// it changes nothing.
pub(super) const SET_STATUS: &str = "UPDATE calls SET status = $2, \
        sequence_number = COALESCE($3, sequence_number), \
        duration_secs = COALESCE($4, duration_secs), updated_at = $5 \
    WHERE call_sid = $1 \
      AND status NOT IN ('completed', 'busy', 'failed', 'no-answer', 'canceled') \
      AND (sequence_number IS NULL OR $3 IS NULL OR $3 > sequence_number)";

/// Whether a call is ours.
pub(super) const KNOWN: &str = "SELECT call_sid FROM calls WHERE call_sid = $1";

/// The statements that take row locks, in one dialect: `$for_update` ends a SELECT of rows the
/// transaction goes on to change, `$skip_locked` one that takes any free rows of many.
macro_rules! locking_statements {
    ($for_update:literal, $skip_locked:literal) => {
        /// Owners in S8 whose verification window ran out, locked.
        pub(in crate::store) const LOCK_VERIFY_DUE: &str = concat!(
            "SELECT ",
            crate::store::row::owner_columns!(),
            " FROM owners WHERE verify_started_at IS NOT NULL \
                     AND verify_started_at <= $1 AND state = 'S8_FWD_CONFIRMED' \
                 ORDER BY verify_started_at, id LIMIT $2",
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
        async fn claim_call_locking(
            &mut self,
            call: &NewCall<'_>,
            number: &PhoneNumber,
        ) -> Result<(Claim, Option<Owner>)> {
            if !$crate::store::$dialect::DATA_MODIFYING_CTES {
                let claim = self.claim_call(call).await?;
                if matches!(claim, Claim::Duplicate { .. }) {
                    return Ok((claim, None));
                }
                return Ok((claim, self.lock_owner_by_number(number).await?));
            }
            self.flush().await?;
            let row = sqlx::query($crate::store::calls::CLAIM_LOCKING_BY_NUMBER)
                .bind(call.call_sid)
                .bind(call.direction)
                .bind(call.from)
                .bind(call.to)
                .bind(call.forwarded_from)
                .bind(call.status)
                .bind(call.at)
                .bind(number.as_str())
                .fetch_one(&mut *self.0)
                .await?;
            let (claimed, owner) = $crate::store::row::claimed_and_owner(&row)?;
            if claimed {
                return Ok((Claim::Fresh, owner));
            }
            let response = $crate::store::inbound::stored_response!(
                self,
                $crate::store::calls::STORED_RESPONSE,
                call.call_sid
            );
            Ok((Claim::Duplicate { response }, owner))
        }

        async fn claim_call(&mut self, call: &NewCall<'_>) -> Result<Claim> {
            let inserted = sqlx::query($crate::store::calls::CLAIM)
                .bind(call.call_sid)
                .bind(call.direction)
                .bind(call.from)
                .bind(call.to)
                .bind(call.forwarded_from)
                .bind(call.status)
                .bind(call.at)
                .execute(&mut *self.0)
                .await?
                .rows_affected();
            if inserted == 1 {
                return Ok(Claim::Fresh);
            }
            let response = $crate::store::inbound::stored_response!(
                self,
                $crate::store::calls::STORED_RESPONSE,
                call.call_sid
            );
            Ok(Claim::Duplicate { response })
        }

        async fn finish_call(
            &mut self,
            call_sid: &str,
            owner_id: Option<&OwnerId>,
            is_test_call: bool,
            response: &str,
        ) -> Result<()> {
            self.1.call(
                call_sid,
                owner_id.map(OwnerId::as_str),
                is_test_call,
                response,
            );
            Ok(())
        }

        async fn record_verify_call(
            &mut self,
            call_sid: &str,
            owner_id: &OwnerId,
            from: &PhoneNumber,
            to: &PhoneNumber,
            now: DateTime<Utc>,
        ) -> Result<()> {
            sqlx::query($crate::store::calls::RECORD_VERIFY_CALL)
                .bind(call_sid)
                .bind(owner_id.as_str())
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(now)
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn update_call_status(
            &mut self,
            call_sid: &str,
            status: &str,
            sequence_number: Option<i32>,
            duration_secs: Option<i32>,
            now: DateTime<Utc>,
        ) -> Result<bool> {
            // Callbacks arrive out of order: a lower SequenceNumber, or anything after a
            // final status, changes nothing.
            sqlx::query($crate::store::calls::SET_STATUS)
                .bind(call_sid)
                .bind(status)
                .bind(sequence_number)
                .bind(duration_secs)
                .bind(now)
                .execute(&mut *self.0)
                .await?;
            let known: Option<String> = sqlx::query_scalar($crate::store::calls::KNOWN)
                .bind(call_sid)
                .fetch_optional(&mut *self.0)
                .await?;
            Ok(known.is_some())
        }

        async fn lock_verify_due(
            &mut self,
            started_before: DateTime<Utc>,
            limit: i64,
        ) -> Result<Vec<Owner>> {
            // The transaction's own writes first, so the read sees them.
            self.flush().await?;
            let rows: Vec<OwnerRow> =
                sqlx::query_as($crate::store::calls::$dialect::LOCK_VERIFY_DUE)
                    .bind(started_before)
                    .bind(limit)
                    .fetch_all(&mut *self.0)
                    .await?;
            rows.into_iter().map(OwnerRow::into_owner).collect()
        }
    };
}
pub(super) use tx_methods;
