//! What the admin API reads, kept out of the shared [`super::Tx`]: none of it belongs to an inbound
//! event's transaction, and none of it writes. Both back ends run the same SQL (the JSON paths
//! `payload -> 'data' -> 'object' ->> 'x'` mean the same to PostgreSQL and SQLite), so the trait is
//! implemented once, by [`impl_admin_reads!`], for each store.
//!
//! Every read is a fixed number of statements, however many rows it returns (no N+1). The filters
//! are indexed by migration 0005: owners by `created_at`, webhook events by `received_at` and
//! `(status, received_at)`, and an owner's payment events by expression indexes on the payload
//! fields that tie an event to an owner. Searching owners by a name or phone substring scans
//! `owners` (a `LIKE '%...%'` cannot use a b-tree); the table holds one row per business.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;

use super::row::row;
use super::row::{OwnerRow, owner_columns};
use super::{Owner, PgStore, Result, SqliteStore};
use crate::domain::OwnerId;

/// One page of a list, and how many rows match in all.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

/// Which webhook events to list; `None` filters nothing. Dates bound `received_at`, both inclusive.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookEventFilter<'a> {
    pub provider: Option<&'a str>,
    pub status: Option<&'a str>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

row! {
    /// A `webhook_events` row as stored (the payload unmasked: callers mask it for lists).
    #[derive(Debug, Clone, Serialize)]
    pub struct WebhookEventRecord {
        pub provider: String,
        pub event_id: String,
        pub event_type: String,
        pub status: String,
        pub error: Option<String>,
        #[serde(serialize_with = "json_value")]
        pub payload: Json<serde_json::Value>,
        pub received_at: DateTime<Utc>,
        pub processed_at: Option<DateTime<Utc>>,
    }
}

fn json_value<S: serde::Serializer>(
    value: &Json<serde_json::Value>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    value.0.serialize(serializer)
}

row! {
    /// A `state_history` row.
    #[derive(Debug, Clone, Serialize)]
    pub struct HistoryRecord {
        pub id: i64,
        pub from_state: String,
        pub to_state: String,
        pub cause: String,
        pub at: DateTime<Utc>,
    }
}

row! {
    /// An `inbound_messages` row: a text from the owner and the TwiML we answered it with.
    #[derive(Debug, Clone, Serialize)]
    pub struct InboundRecord {
        pub message_sid: String,
        pub from_addr: String,
        pub to_addr: String,
        pub body: String,
        /// The TwiML answered; None only while the claiming transaction was open.
        pub response: Option<String>,
        pub received_at: DateTime<Utc>,
    }
}

row! {
    /// An `outbound_messages` row: a text (or verification call) we sent first, with its delivery.
    #[derive(Debug, Clone, Serialize)]
    pub struct OutboundRecord {
        pub id: i64,
        pub to_addr: String,
        pub body: String,
        pub status: String,
        pub kind: String,
        pub attempts: i32,
        pub twilio_sid: Option<String>,
        pub last_error: Option<String>,
        pub error_code: Option<String>,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
    }
}

row! {
    /// An outbox message that failed: given up by us (`last_error` says why) or reported failed by
    /// Twilio (`error_code`).
    #[derive(Debug, Clone, Serialize)]
    pub struct FailedOutboundRecord {
        pub id: i64,
        pub owner_id: String,
        pub to_addr: String,
        pub kind: String,
        pub attempts: i32,
        pub twilio_sid: Option<String>,
        pub last_error: Option<String>,
        pub error_code: Option<String>,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
    }
}

row! {
    /// A `calls` row.
    #[derive(Debug, Clone, Serialize)]
    pub struct CallRecord {
        pub call_sid: String,
        pub direction: String,
        pub from_addr: String,
        pub to_addr: String,
        pub forwarded_from: Option<String>,
        pub status: String,
        pub duration_secs: Option<i32>,
        pub is_test_call: bool,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
    }
}

/// Everything stored about one owner.
#[derive(Debug, Clone)]
pub struct OwnerRecord {
    pub owner: Owner,
    pub history: Vec<HistoryRecord>,
    pub inbound: Vec<InboundRecord>,
    pub outbound: Vec<OutboundRecord>,
    pub calls: Vec<CallRecord>,
    /// Stripe events that name the owner (`client_reference_id`) or one of their linked Stripe
    /// objects (customer, subscription, payment intent), oldest first.
    pub payment_events: Vec<WebhookEventRecord>,
}

/// The admin API's reads. A supertrait of [`super::Store`], so every store has them.
pub trait AdminReads: Send + Sync {
    /// Owners whose phone is `q` (or ends with its digits, when `q` is a phone number or digits),
    /// or whose owner or business name contains `q`, case-insensitively; newest first.
    fn search_owners(
        &self,
        q: &str,
        limit: i64,
        offset: i64,
    ) -> impl Future<Output = Result<Page<Owner>>> + Send;

    /// One owner with their history, messages, calls and payment events; None when unknown.
    fn owner_record(
        &self,
        id: &OwnerId,
    ) -> impl Future<Output = Result<Option<OwnerRecord>>> + Send;

    /// Webhook events, newest first.
    fn webhook_events(
        &self,
        filter: &WebhookEventFilter<'_>,
        limit: i64,
        offset: i64,
    ) -> impl Future<Output = Result<Page<WebhookEventRecord>>> + Send;

    fn webhook_event(
        &self,
        provider: &str,
        event_id: &str,
    ) -> impl Future<Output = Result<Option<WebhookEventRecord>>> + Send;

    /// Failed outbox messages, newest first (partial index `outbound_messages_failed`).
    fn failed_outbound(
        &self,
        limit: i64,
        offset: i64,
    ) -> impl Future<Output = Result<Page<FailedOutboundRecord>>> + Send;

    /// `(state, owners)` for the owners created at or after `since`; states with none are absent.
    fn funnel(
        &self,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(String, i64)>>> + Send;

    /// Purchases the pool keeper could not confirm or rule out yet (see [`crate::replenish`]): a
    /// count that stays above 0 means numbers we may be paying for are in no pool.
    fn uncertain_purchase_count(&self) -> impl Future<Output = Result<i64>> + Send;
}

/// The search's bind values: the exact phone, a `LIKE` pattern for a phone suffix (None when `q`
/// is not phone-like), and a lower-case `LIKE` pattern for names.
pub(crate) fn search_patterns(q: &str) -> (String, Option<String>, String) {
    let q = q.trim();
    let phone_like = q.strip_prefix('+').unwrap_or(q);
    let separators = |c: char| matches!(c, ' ' | '-' | '(' | ')' | '.');
    let digits: String = phone_like.chars().filter(|c| !separators(*c)).collect();
    let suffix = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("%{digits}"));
    let mut escaped = String::with_capacity(q.len() + 2);
    escaped.push('%');
    for c in q.to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('%');
    (q.to_owned(), suffix, escaped)
}

/// The search's condition, in a macro so `concat!` can build both of its queries.
macro_rules! search_where {
    () => {
        " FROM owners \
         WHERE owner_phone = $1 OR owner_phone LIKE $2 \
            OR LOWER(owner_name) LIKE $3 ESCAPE '\\' OR LOWER(business_name) LIKE $3 ESCAPE '\\'"
    };
}

const SEARCH_OWNERS: &str = concat!(
    "SELECT ",
    owner_columns!(),
    search_where!(),
    " ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
);

const SEARCH_COUNT: &str = concat!("SELECT COUNT(*)", search_where!());

const OWNER_BY_ID: &str = concat!("SELECT ", owner_columns!(), " FROM owners WHERE id = $1");

const HISTORY: &str = "SELECT id, from_state, to_state, cause, at FROM state_history \
     WHERE owner_id = $1 ORDER BY id";

const INBOUND: &str = "SELECT message_sid, from_addr, to_addr, body, response, received_at \
     FROM inbound_messages WHERE owner_id = $1 ORDER BY received_at, message_sid";

const OUTBOUND: &str = "SELECT id, to_addr, body, status, kind, attempts, twilio_sid, last_error, \
         error_code, created_at, updated_at \
     FROM outbound_messages WHERE owner_id = $1 ORDER BY id";

const FAILED_OUTBOUND: &str = "SELECT id, owner_id, to_addr, kind, attempts, twilio_sid, \
         last_error, error_code, created_at, updated_at \
     FROM outbound_messages WHERE status = 'failed' ORDER BY id DESC LIMIT $1 OFFSET $2";

const FAILED_OUTBOUND_COUNT: &str =
    "SELECT COUNT(*) FROM outbound_messages WHERE status = 'failed'";

const CALLS: &str = "SELECT call_sid, direction, from_addr, to_addr, forwarded_from, status, \
         duration_secs, is_test_call, created_at, updated_at \
     FROM calls WHERE owner_id = $1 ORDER BY created_at, call_sid";

/// The columns of [`WebhookEventRecord`].
macro_rules! event_columns {
    () => {
        "provider, event_id, event_type, status, error, payload, received_at, processed_at"
    };
}

/// Each arm is one indexed lookup (migration 0005): by `client_reference_id`, or through a
/// `stripe_links` row of the owner joined on the payload field of that kind of Stripe object.
const PAYMENT_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM webhook_events WHERE provider = 'stripe' AND event_id IN ( \
         SELECT event_id FROM webhook_events \
          WHERE provider = 'stripe' \
            AND (payload -> 'data' -> 'object' ->> 'client_reference_id') = $1 \
         UNION SELECT e.event_id FROM stripe_links l JOIN webhook_events e \
             ON (e.payload -> 'data' -> 'object' ->> 'customer') = l.stripe_id \
          WHERE l.owner_id = $1 AND l.kind = 'customer' AND e.provider = 'stripe' \
         UNION SELECT e.event_id FROM stripe_links l JOIN webhook_events e \
             ON (e.payload -> 'data' -> 'object' ->> 'subscription') = l.stripe_id \
          WHERE l.owner_id = $1 AND l.kind = 'subscription' AND e.provider = 'stripe' \
         UNION SELECT e.event_id FROM stripe_links l JOIN webhook_events e \
             ON (e.payload -> 'data' -> 'object' ->> 'payment_intent') = l.stripe_id \
          WHERE l.owner_id = $1 AND l.kind = 'payment_intent' AND e.provider = 'stripe' \
         UNION SELECT e.event_id FROM stripe_links l JOIN webhook_events e \
             ON (e.payload -> 'data' -> 'object' ->> 'id') = l.stripe_id \
          WHERE l.owner_id = $1 AND e.provider = 'stripe' \
     ) ORDER BY received_at, event_id"
);

/// The event list's filters; a NULL parameter filters nothing.
macro_rules! events_where {
    () => {
        " FROM webhook_events \
         WHERE ($1 IS NULL OR provider = $1) AND ($2 IS NULL OR status = $2) \
           AND ($3 IS NULL OR received_at >= $3) AND ($4 IS NULL OR received_at <= $4)"
    };
}

const WEBHOOK_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    events_where!(),
    " ORDER BY received_at DESC, provider, event_id DESC LIMIT $5 OFFSET $6"
);

const EVENTS_COUNT: &str = concat!("SELECT COUNT(*)", events_where!());

const WEBHOOK_EVENT: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM webhook_events WHERE provider = $1 AND event_id = $2"
);

const FUNNEL: &str =
    "SELECT state, COUNT(*) FROM owners WHERE created_at >= $1 GROUP BY state ORDER BY state";

const UNCERTAIN_PURCHASE_COUNT: &str = "SELECT COUNT(*) FROM uncertain_purchases";

/// Implements [`AdminReads`] for a store with a `conn()`; the SQL above is the same for both.
macro_rules! impl_admin_reads {
    ($store:ty) => {
        impl AdminReads for $store {
            async fn search_owners(&self, q: &str, limit: i64, offset: i64) -> Result<Page<Owner>> {
                let (exact, suffix, name) = search_patterns(q);
                let rows: Vec<OwnerRow> = sqlx::query_as(SEARCH_OWNERS)
                    .bind(&exact)
                    .bind(suffix.as_deref())
                    .bind(&name)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                let total: i64 = sqlx::query_scalar(SEARCH_COUNT)
                    .bind(&exact)
                    .bind(suffix.as_deref())
                    .bind(&name)
                    .fetch_one(&mut *self.conn().await?)
                    .await?;
                let items = rows
                    .into_iter()
                    .map(OwnerRow::into_owner)
                    .collect::<Result<_>>()?;
                Ok(Page { items, total })
            }

            async fn owner_record(&self, id: &OwnerId) -> Result<Option<OwnerRecord>> {
                let mut conn = self.conn().await?;
                let Some(row) = sqlx::query_as::<_, OwnerRow>(OWNER_BY_ID)
                    .bind(id.as_str())
                    .fetch_optional(&mut *conn)
                    .await?
                else {
                    return Ok(None);
                };
                let owner = row.into_owner()?;
                let history = sqlx::query_as(HISTORY)
                    .bind(id.as_str())
                    .fetch_all(&mut *conn)
                    .await?;
                let inbound = sqlx::query_as(INBOUND)
                    .bind(id.as_str())
                    .fetch_all(&mut *conn)
                    .await?;
                let outbound = sqlx::query_as(OUTBOUND)
                    .bind(id.as_str())
                    .fetch_all(&mut *conn)
                    .await?;
                let calls = sqlx::query_as(CALLS)
                    .bind(id.as_str())
                    .fetch_all(&mut *conn)
                    .await?;
                let payment_events = sqlx::query_as(PAYMENT_EVENTS)
                    .bind(id.as_str())
                    .fetch_all(&mut *conn)
                    .await?;
                Ok(Some(OwnerRecord {
                    owner,
                    history,
                    inbound,
                    outbound,
                    calls,
                    payment_events,
                }))
            }

            async fn webhook_events(
                &self,
                filter: &WebhookEventFilter<'_>,
                limit: i64,
                offset: i64,
            ) -> Result<Page<WebhookEventRecord>> {
                let items = sqlx::query_as(WEBHOOK_EVENTS)
                    .bind(filter.provider)
                    .bind(filter.status)
                    .bind(filter.from)
                    .bind(filter.to)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                let total: i64 = sqlx::query_scalar(EVENTS_COUNT)
                    .bind(filter.provider)
                    .bind(filter.status)
                    .bind(filter.from)
                    .bind(filter.to)
                    .fetch_one(&mut *self.conn().await?)
                    .await?;
                Ok(Page { items, total })
            }

            async fn webhook_event(
                &self,
                provider: &str,
                event_id: &str,
            ) -> Result<Option<WebhookEventRecord>> {
                Ok(sqlx::query_as(WEBHOOK_EVENT)
                    .bind(provider)
                    .bind(event_id)
                    .fetch_optional(&mut *self.conn().await?)
                    .await?)
            }

            async fn failed_outbound(
                &self,
                limit: i64,
                offset: i64,
            ) -> Result<Page<FailedOutboundRecord>> {
                let items = sqlx::query_as(FAILED_OUTBOUND)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                let total: i64 = sqlx::query_scalar(FAILED_OUTBOUND_COUNT)
                    .fetch_one(&mut *self.conn().await?)
                    .await?;
                Ok(Page { items, total })
            }

            async fn funnel(&self, since: DateTime<Utc>) -> Result<Vec<(String, i64)>> {
                Ok(sqlx::query_as(FUNNEL)
                    .bind(since)
                    .fetch_all(&mut *self.conn().await?)
                    .await?)
            }

            async fn uncertain_purchase_count(&self) -> Result<i64> {
                Ok(sqlx::query_scalar(UNCERTAIN_PURCHASE_COUNT)
                    .fetch_one(&mut *self.conn().await?)
                    .await?)
            }
        }
    };
}

impl_admin_reads!(PgStore);
impl_admin_reads!(SqliteStore);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_like_queries_match_by_suffix_and_names_are_escaped() {
        let (exact, suffix, name) = search_patterns(" +44 7700 900123 ");
        assert_eq!(exact, "+44 7700 900123");
        assert_eq!(suffix.as_deref(), Some("%447700900123"));
        assert_eq!(name, "%+44 7700 900123%");
        assert_eq!(search_patterns("900-123").1.as_deref(), Some("%900123"));
        let (_, suffix, name) = search_patterns("Smith_50%");
        assert_eq!(suffix, None);
        assert_eq!(name, "%smith\\_50\\%%");
    }
}
