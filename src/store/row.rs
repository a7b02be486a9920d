//! Rows as stored, read by column name, and their conversion to domain types: a value the domain
//! would refuse is a [`StoreError::Corrupt`] naming the table and row, never a panic.
//!
//! Without sqlx's `derive` feature (its proc-macro crate builds both database drivers a second
//! time, for one `FromRow` impl per row type), [`row!`] declares a row type and its `FromRow`.

use chrono::{DateTime, Utc};

use super::{OutboundKind, OutboundMessage, OutboundStatus, Owner, Result, StoreError};
use crate::conversation::{Gate, StateName};
use crate::domain::{Locale, Notify, OwnerId, PhoneNumber, PhoneType, mask_phone};

/// Declares a struct and implements `sqlx::FromRow` for it on every back end, each field read
/// from the column of its name (as `#[derive(sqlx::FromRow)]` would).
macro_rules! row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident : $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $ty),*
        }

        impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for $name
        where
            &'r str: sqlx::ColumnIndex<R>,
            $($ty: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,)*
        {
            fn from_row(row: &'r R) -> sqlx::Result<Self> {
                Ok(Self {
                    $($field: sqlx::Row::try_get(row, stringify!($field))?),*
                })
            }
        }
    };
}
pub(crate) use row;

/// The columns of [`OwnerRow`], in a macro so `concat!` can build whole queries from it
/// (sqlx takes only `&'static str` SQL).
macro_rules! owner_columns {
    () => {
        "id, owner_phone, locale, state, gate, business_type, location, business_name, \
         owner_name, notify, phone_type, misses, opted_out, payment_active, paid_at, \
         twilio_number, waitlisted_at, verify_started_at, created_at, updated_at"
    };
}
pub(super) use owner_columns;

/// The columns of [`OutboundRow`].
macro_rules! outbound_columns {
    () => {
        "id, owner_id, to_addr, body, status, attempts, twilio_sid, last_error, needs_reconcile, \
         attempted_at, kind, created_at, from_addr, to_email, subject, topic"
    };
}
pub(super) use outbound_columns;

pub(super) fn corrupt(table: &'static str, detail: String) -> StoreError {
    StoreError::Corrupt { table, detail }
}

pub(super) fn owner_id(table: &'static str, raw: String) -> Result<OwnerId> {
    OwnerId::parse(&raw)
        .ok_or_else(|| corrupt(table, format!("owner id {raw:?} is not one we issue")))
}

/// Parses a stored phone number; the detail names the row and column and masks the value.
/// `what` is only built for a bad value: rows are decoded on every event.
pub(super) fn phone(
    table: &'static str,
    what: impl FnOnce() -> String,
    raw: &str,
) -> Result<PhoneNumber> {
    PhoneNumber::from_stored(raw).map_err(|_| {
        corrupt(
            table,
            format!("{}: {} is not E.164", what(), mask_phone(raw)),
        )
    })
}

row! {
    /// An `owners` row as stored.
    pub(super) struct OwnerRow {
        id: String,
        owner_phone: String,
        locale: String,
        state: String,
        gate: Option<String>,
        business_type: Option<String>,
        location: Option<String>,
        business_name: Option<String>,
        owner_name: Option<String>,
        notify: Option<String>,
        phone_type: Option<String>,
        misses: i32,
        opted_out: bool,
        payment_active: bool,
        paid_at: Option<DateTime<Utc>>,
        twilio_number: Option<String>,
        waitlisted_at: Option<DateTime<Utc>>,
        verify_started_at: Option<DateTime<Utc>>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    }
}

impl OwnerRow {
    pub(super) fn into_owner(self) -> Result<Owner> {
        const T: &str = "owners";
        let id = owner_id(T, self.id)?;
        let bad = |column: &str, value: &str| {
            corrupt(
                T,
                format!("owner {id}: {column} {value:?} is not a known value"),
            )
        };
        let owner_phone = phone(T, || format!("owner {id}: owner_phone"), &self.owner_phone)?;
        let locale = Locale::from_tag(&self.locale).ok_or_else(|| bad("locale", &self.locale))?;
        let state = StateName::parse(&self.state).ok_or_else(|| bad("state", &self.state))?;
        let gate = match self.gate.as_deref() {
            Some(raw) => Some(Gate::parse(raw).ok_or_else(|| bad("gate", raw))?),
            None => None,
        };
        let phone_type = match self.phone_type.as_deref() {
            Some(raw) => Some(PhoneType::parse(raw).ok_or_else(|| bad("phone_type", raw))?),
            None => None,
        };
        let twilio_number = match self.twilio_number.as_deref() {
            Some(raw) => Some(phone(T, || format!("owner {id}: twilio_number"), raw)?),
            None => None,
        };
        Ok(Owner {
            id,
            owner_phone,
            locale,
            state,
            gate,
            business_type: self.business_type,
            location: self.location,
            business_name: self.business_name,
            owner_name: self.owner_name,
            notify: self.notify.as_deref().map(Notify::from_stored),
            phone_type,
            misses: self.misses,
            opted_out: self.opted_out,
            payment_active: self.payment_active,
            paid_at: self.paid_at,
            twilio_number,
            waitlisted_at: self.waitlisted_at,
            verify_started_at: self.verify_started_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

row! {
    /// An `outbound_messages` row as a worker sees it.
    pub(super) struct OutboundRow {
        id: i64,
        owner_id: String,
        to_addr: String,
        body: String,
        status: String,
        attempts: i32,
        twilio_sid: Option<String>,
        last_error: Option<String>,
        needs_reconcile: bool,
        attempted_at: Option<DateTime<Utc>>,
        kind: String,
        created_at: DateTime<Utc>,
        from_addr: Option<String>,
        to_email: Option<String>,
        subject: Option<String>,
        topic: Option<String>,
    }
}

impl OutboundRow {
    pub(super) fn into_message(self) -> Result<OutboundMessage> {
        const T: &str = "outbound_messages";
        let id = self.id;
        Ok(OutboundMessage {
            id,
            owner_id: owner_id(T, self.owner_id)?,
            to: phone(T, || format!("message {id}: to_addr"), &self.to_addr)?,
            body: self.body,
            status: outbound_status(id, &self.status)?,
            attempts: self.attempts,
            twilio_sid: self.twilio_sid,
            last_error: self.last_error,
            needs_reconcile: self.needs_reconcile,
            attempted_at: self.attempted_at,
            kind: match self.kind.as_str() {
                "sms" => OutboundKind::Sms,
                "verify_call" => OutboundKind::VerifyCall,
                "email" => OutboundKind::Email,
                other => {
                    return Err(corrupt(T, format!("message {id}: unknown kind {other:?}")));
                }
            },
            created_at: self.created_at,
            from: self
                .from_addr
                .map(|from| phone(T, || format!("message {id}: from_addr"), &from))
                .transpose()?,
            to_email: self.to_email,
            subject: self.subject,
            topic: self.topic,
        })
    }
}

pub(super) fn outbound_status(id: i64, raw: &str) -> Result<OutboundStatus> {
    OutboundStatus::parse(raw).ok_or_else(|| {
        corrupt(
            "outbound_messages",
            format!("message {id}: status {raw:?} is not a known value"),
        )
    })
}

/// Reads the row of an `owners::claim_then_lock!` statement: whether the claim took, and the
/// owner it locked, if one matched (their `id` is NULL otherwise).
pub(super) fn claimed_and_owner<'r, R: sqlx::Row>(row: &'r R) -> Result<(bool, Option<Owner>)>
where
    &'r str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    OwnerRow: sqlx::FromRow<'r, R>,
{
    let claimed: i64 = row.try_get("claimed")?;
    let id: Option<String> = row.try_get("id")?;
    let owner = match id {
        Some(_) => Some(<OwnerRow as sqlx::FromRow<R>>::from_row(row)?.into_owner()?),
        None => None,
    };
    Ok((claimed == 1, owner))
}
