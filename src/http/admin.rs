//! The admin API, behind `Authorization: Bearer $ADMIN_TOKEN`; not mounted when the token is unset.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::conversation::StateName;
use crate::costs::OwnerCosts;
use crate::domain::{OwnerId, PhoneNumber, mask_email, mask_phone};
use crate::engine::EngineError;
use crate::engine::payments::{self, PaymentError, Receipt};
use crate::prices::Amount;
use crate::store::admin::{
    CallRecord, FailedOutboundRecord, HistoryRecord, InboundRecord, OutboundRecord, OwnerRecord,
    WebhookEventFilter, WebhookEventRecord,
};
use crate::store::ledger::GroupBy;
use crate::store::{Owner, Store, StoreError};

/// Lists return this many items unless `limit` says otherwise.
pub const DEFAULT_LIMIT: i64 = 50;
/// The most a list returns at once; a larger `limit` is a 400.
pub const MAX_LIMIT: i64 = 200;
/// The funnel counts owners created within this many days.
pub const FUNNEL_DAYS: i64 = 7;

/// Where the owner routes live.
pub const OWNERS_PATH: &str = "/admin/api/owners";
/// The owner routes' first name (an alias), still answered because ops scripts call it.
pub const OWNERS_PATH_ALIAS: &str = "/admin/api/clients";

/// The owner routes under `prefix`.
fn owner_routes<S: Store>(prefix: &str, router: Router<AppState<S>>) -> Router<AppState<S>> {
    router
        .route(prefix, get(owner_by_phone::<S>))
        .route(&format!("{prefix}/search"), get(search_owners::<S>))
        .route(&format!("{prefix}/{{id}}"), get(owner_record::<S>))
        .route(&format!("{prefix}/{{id}}/reset"), post(reset_owner::<S>))
        .route(
            &format!("{prefix}/{{id}}/release-number"),
            post(release_owner_number::<S>),
        )
}

/// Every admin route; the caller adds [`require_token`] around them.
pub fn routes<S: Store>() -> Router<AppState<S>> {
    owner_routes(OWNERS_PATH, owner_routes(OWNERS_PATH_ALIAS, Router::new()))
        .route("/admin/api/pool", get(pool::<S>).post(add_pool::<S>))
        .route("/admin/api/pool/{e164}/release", post(release_number::<S>))
        .route("/admin/api/webhook-events", get(webhook_events::<S>))
        .route(
            "/admin/api/webhook-events/{provider}/{id}/reprocess",
            post(reprocess_event::<S>),
        )
        .route("/admin/api/funnel", get(funnel::<S>))
        .route("/admin/api/outbound/failed", get(failed_outbound::<S>))
        .route("/admin/api/reminders", get(reminders::<S>))
        .route("/admin/api/costs", get(costs::<S>))
}

/// Rejects requests without the right bearer token, comparing in constant time.
pub async fn require_token<S: Store>(
    State(app): State<AppState<S>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let expected = app.config.admin_token.as_deref().unwrap_or_default();
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let ok = !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()));
    if ok {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::Unauthorized)
    }
}

#[derive(Debug, Deserialize)]
pub struct OwnerQuery {
    phone: Option<String>,
}

/// One owner as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct OwnerView {
    pub id: String,
    pub owner_phone: String,
    pub state: &'static str,
    pub gate: Option<&'static str>,
    pub business_type: Option<String>,
    pub location: Option<String>,
    pub business_name: Option<String>,
    pub owner_name: Option<String>,
    pub notify: Option<String>,
    pub payment_active: bool,
    pub twilio_number: Option<String>,
    pub opted_out: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Owner> for OwnerView {
    fn from(c: Owner) -> Self {
        Self {
            id: c.id.to_string(),
            owner_phone: c.owner_phone.to_string(),
            state: c.state.as_str(),
            gate: c.gate.map(|g| g.as_str()),
            business_type: c.business_type,
            location: c.location,
            business_name: c.business_name,
            owner_name: c.owner_name,
            notify: c.notify.map(|n| n.to_stored()),
            payment_active: c.payment_active,
            twilio_number: c.twilio_number.map(|n| n.to_string()),
            opted_out: c.opted_out,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// `GET /admin/api/owners?phone=<E.164>`
pub async fn owner_by_phone<S: Store>(
    State(app): State<AppState<S>>,
    Query(query): Query<OwnerQuery>,
) -> Result<Json<OwnerView>, ApiError> {
    let raw = query
        .phone
        .ok_or_else(|| ApiError::BadRequest("query parameter phone is required".into()))?;
    let phone =
        PhoneNumber::parse(&raw).map_err(|e| ApiError::BadRequest(format!("phone: {e}")))?;
    let owner = app
        .engine
        .owner_by_phone(&phone)
        .await?
        .ok_or_else(|| ApiError::NotFound("no owner with that phone".into()))?;
    Ok(Json(owner.into()))
}

/// `GET /admin/api/pool`: numbers by status, whether enough are free, and how many purchases the
/// keeper could not confirm yet (numbers we may be paying for that are in no pool).
pub async fn pool<S: Store>(
    State(app): State<AppState<S>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = app.engine.store();
    let stats = store.pool_stats().await.map_err(EngineError::from)?;
    let uncertain_purchases = store.uncertain_purchase_count().await.map_err(db)?;
    let low_water = app.config.pool_low_water;
    Ok(Json(serde_json::json!({
        "total": stats.total,
        "by_status": {
            "AVAILABLE": stats.available,
            "ASSIGNED": stats.assigned,
            "QUARANTINED": stats.quarantined,
        },
        "available": stats.available,
        "low_water": low_water,
        "healthy": stats.available >= low_water,
        "uncertain_purchases": uncertain_purchases,
    })))
}

/// `POST /admin/api/pool` with `{"numbers": ["+447700900901", ...]}`: adds them as
/// `onboard pool add` does (waiting owners are served at once). Checked as the CLI checks: every
/// bad item named, and nothing added unless all are good.
pub async fn add_pool<S: Store>(
    State(app): State<AppState<S>>,
    body: Result<Json<AddPool>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::BadRequest(format!(
            "expected a JSON body {{\"numbers\": [\"+447700900901\", ...]}}: {}",
            e.body_text()
        ))
    })?;
    let numbers =
        crate::pool::parse_numbers(body.numbers.iter().map(String::as_str)).map_err(|bad| {
            let items: Vec<String> = bad.iter().map(|b| b.describe("item")).collect();
            ApiError::BadRequest(format!("{}; nothing was added", items.join("; ")))
        })?;
    let (added, served) = app.engine.add_numbers(&numbers).await?;
    Ok(Json(serde_json::json!({
        "added": added,
        "already_in_pool": numbers.len() as u64 - added,
        "owners_served": served.len(),
    })))
}

/// The body of `POST /admin/api/pool`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddPool {
    pub numbers: Vec<String>,
}

// --- shared helpers ---------------------------------------------------------------------------

fn db(e: StoreError) -> ApiError {
    ApiError::Engine(e.into())
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// `limit` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) and `offset` (0 or more, default 0).
fn pagination(limit: Option<&str>, offset: Option<&str>) -> Result<(i64, i64), ApiError> {
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}, not {raw:?}"
                ))
            })?,
    };
    let offset = match offset {
        None => 0,
        Some(raw) => raw
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "offset must be a whole number, 0 or more, not {raw:?}"
                ))
            })?,
    };
    Ok((limit, offset))
}

fn owner_id(raw: &str) -> Result<OwnerId, ApiError> {
    OwnerId::parse(raw)
        .ok_or_else(|| ApiError::BadRequest(format!("{raw:?} is not an owner id (e.g. c_...)")))
}

/// One page of a list.
#[derive(Debug, Serialize)]
pub struct PageView<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

// --- masking ----------------------------------------------------------------------------------

/// Masks, anywhere in a JSON value, every string that looks like an E.164 phone number (spaces,
/// dashes, dots and brackets allowed) or an email address, and every string under a key named
/// `phone` or `email` (or ending `_phone`, `_email`), whatever it looks like.
pub fn mask_pii(value: &mut Value) {
    mask_in(value, None);
}

fn mask_in(value: &mut Value, key: Option<&str>) {
    match value {
        Value::String(s) => {
            if let Some(masked) = mask_string(s, key) {
                *s = masked;
            }
        }
        // The elements of an array are masked as their key's values would be.
        Value::Array(items) => items.iter_mut().for_each(|v| mask_in(v, key)),
        Value::Object(map) => map.iter_mut().for_each(|(k, v)| mask_in(v, Some(k))),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn mask_string(s: &str, key: Option<&str>) -> Option<String> {
    if looks_like_email(s) {
        return Some(mask_email(s.trim()));
    }
    if looks_like_phone(s) {
        return Some(mask_phone(s.trim()));
    }
    let key = key?.to_ascii_lowercase();
    let named = |what: &str| key == what || key.ends_with(&format!("_{what}"));
    if s.is_empty() {
        None
    } else if named("email") {
        Some(mask_email(s))
    } else if named("phone") {
        Some(mask_phone(s))
    } else {
        None
    }
}

fn looks_like_phone(s: &str) -> bool {
    let s = s.trim();
    s.starts_with('+') && {
        let compact: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        // Masking errs on the side of hiding: any E.164 shape, whether its country exists or not.
        compact.strip_prefix('+').is_some_and(|digits| {
            (2..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
        })
    }
}

fn looks_like_email(s: &str) -> bool {
    let s = s.trim();
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !s.chars().any(char::is_whitespace)
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        None => false,
    }
}

// --- owners -----------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// An owner in a list: the phone masked.
#[derive(Debug, Serialize)]
pub struct OwnerListItem {
    pub id: String,
    /// Masked: `+44*******123`.
    pub owner_phone: String,
    pub state: &'static str,
    pub gate: Option<&'static str>,
    pub business_name: Option<String>,
    pub owner_name: Option<String>,
    pub payment_active: bool,
    pub created_at: DateTime<Utc>,
}

impl From<Owner> for OwnerListItem {
    fn from(c: Owner) -> Self {
        Self {
            id: c.id.to_string(),
            owner_phone: c.owner_phone.masked(),
            state: c.state.as_str(),
            gate: c.gate.map(|g| g.as_str()),
            business_name: c.business_name,
            owner_name: c.owner_name,
            payment_active: c.payment_active,
            created_at: c.created_at,
        }
    }
}

/// `GET /admin/api/owners/search?q=&limit=&offset=`: owners whose phone is `q` or ends with its
/// digits, or whose owner or business name contains it (any case); newest first, phones masked.
pub async fn search_owners<S: Store>(
    State(app): State<AppState<S>>,
    params: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<PageView<OwnerListItem>>, ApiError> {
    let params = query(params)?;
    let q = params.q.as_deref().map(str::trim).unwrap_or_default();
    if q.is_empty() {
        return Err(ApiError::BadRequest(
            "query parameter q is required: a phone number (or its last digits), or part of an \
             owner or business name"
                .into(),
        ));
    }
    if q.chars().count() > 100 {
        return Err(ApiError::BadRequest("q is over 100 characters".into()));
    }
    let (limit, offset) = pagination(params.limit.as_deref(), params.offset.as_deref())?;
    let page = app
        .engine
        .store()
        .search_owners(q, limit, offset)
        .await
        .map_err(db)?;
    Ok(Json(PageView {
        items: page.items.into_iter().map(OwnerListItem::from).collect(),
        total: page.total,
        limit,
        offset,
    }))
}

/// What the owner answered.
#[derive(Debug, Serialize)]
pub struct Answers {
    pub business_type: Option<String>,
    pub location: Option<String>,
    pub business_name: Option<String>,
    pub owner_name: Option<String>,
    /// `sms`, or the email address.
    pub notify: Option<String>,
    pub phone_type: Option<&'static str>,
}

/// Everything stored about one owner.
///
/// Unlike the lists, this view is NOT masked: it is one owner's own record, for an authorised
/// operator working on that owner, so their phone, the numbers in their messages and calls, their
/// notification email and their Stripe payloads are all shown in full, consistently.
#[derive(Debug, Serialize)]
pub struct OwnerRecordView {
    pub id: String,
    pub owner_phone: String,
    pub locale: &'static str,
    pub state: &'static str,
    pub gate: Option<&'static str>,
    pub answers: Answers,
    /// Answers in a row that did not fit the current question.
    pub misses: i32,
    pub opted_out: bool,
    pub payment_active: bool,
    pub paid_at: Option<DateTime<Utc>>,
    pub twilio_number: Option<String>,
    pub waitlisted_at: Option<DateTime<Utc>>,
    pub verify_started_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub state_history: Vec<HistoryRecord>,
    /// Texts from the owner, each with the TwiML we answered.
    pub inbound_messages: Vec<InboundRecord>,
    /// Texts (and verification calls) we sent first, with their delivery status.
    pub outbound_messages: Vec<OutboundRecord>,
    pub calls: Vec<CallRecord>,
    pub payment_events: Vec<WebhookEventRecord>,
    /// What the owner has cost this month and in all, in the reporting currency.
    pub costs: Option<OwnerCosts>,
    /// Missed calls this billing month against the plan (from the owner's payment date).
    pub usage: Option<crate::engine::after::Usage>,
}

impl From<OwnerRecord> for OwnerRecordView {
    fn from(r: OwnerRecord) -> Self {
        let c = r.owner;
        Self {
            id: c.id.to_string(),
            owner_phone: c.owner_phone.to_string(),
            locale: c.locale.tag(),
            state: c.state.as_str(),
            gate: c.gate.map(|g| g.as_str()),
            answers: Answers {
                business_type: c.business_type,
                location: c.location,
                business_name: c.business_name,
                owner_name: c.owner_name,
                notify: c.notify.map(|n| n.to_stored()),
                phone_type: c.phone_type.map(|p| p.as_str()),
            },
            misses: c.misses,
            opted_out: c.opted_out,
            payment_active: c.payment_active,
            paid_at: c.paid_at,
            twilio_number: c.twilio_number.map(|n| n.to_string()),
            waitlisted_at: c.waitlisted_at,
            verify_started_at: c.verify_started_at,
            created_at: c.created_at,
            updated_at: c.updated_at,
            state_history: r.history,
            inbound_messages: r.inbound,
            outbound_messages: r.outbound,
            calls: r.calls,
            payment_events: r.payment_events,
            costs: None,
            usage: None,
        }
    }
}

/// `GET /admin/api/owners/{id}`: one owner in full (see [`OwnerRecordView`] on masking).
pub async fn owner_record<S: Store>(
    State(app): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<OwnerRecordView>, ApiError> {
    let id = owner_id(&id)?;
    let record = app
        .engine
        .store()
        .owner_record(&id)
        .await
        .map_err(db)?
        .ok_or_else(|| ApiError::NotFound(format!("no owner with id {id}")))?;
    let mut view = OwnerRecordView::from(record);
    view.costs = Some(app.engine.owner_costs(&id).await?);
    view.usage = app.engine.usage(&id).await?;
    Ok(Json(view))
}

/// `POST /admin/api/owners/{id}/reset`: back to S1 with the answers cleared, keeping payment and
/// number (as RESTART does); recorded in the state history as `admin_reset`. Answers the owner
/// as `GET /admin/api/owners?phone=` does.
pub async fn reset_owner<S: Store>(
    State(app): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<OwnerView>, ApiError> {
    let id = owner_id(&id)?;
    match app.engine.admin_reset(&id).await {
        Ok(owner) => Ok(Json(owner.into())),
        Err(EngineError::UnknownOwner(id)) => {
            Err(ApiError::NotFound(format!("no owner with id {id}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /admin/api/owners/{id}/release-number`: the owner's number goes to quarantine and never
/// back to them; a paid owner gets another (or waits for one) and new forwarding instructions,
/// texted after their quiet hours. Recorded in the state history as `admin_release_number`.
/// 404 for an unknown owner, 409 for one without a number.
pub async fn release_owner_number<S: Store>(
    State(app): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = owner_id(&id)?;
    match app.engine.admin_release_number(&id).await {
        Ok(released) => Ok(Json(serde_json::json!({
            "released": released.number.as_str(),
            "owner": OwnerView::from(released.owner),
            "texts": released.texts,
        }))),
        Err(EngineError::UnknownOwner(id)) => {
            Err(ApiError::NotFound(format!("no owner with id {id}")))
        }
        Err(e @ EngineError::NoNumber(_)) => Err(ApiError::Conflict(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

// --- the pool ---------------------------------------------------------------------------------

/// `POST /admin/api/pool/{e164}/release`: a number no owner holds goes to quarantine. A number an
/// owner holds is refused (409): taking it from them is a payment decision.
pub async fn release_number<S: Store>(
    State(app): State<AppState<S>>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let number =
        PhoneNumber::parse(&raw).map_err(|e| ApiError::BadRequest(format!("number: {e}")))?;
    match app.engine.release_number(&number).await {
        Ok(()) => Ok(Json(serde_json::json!({
            "number": number.as_str(),
            "status": "QUARANTINED",
        }))),
        Err(e @ EngineError::NumberInUse(..)) => Err(ApiError::Conflict(e.to_string())),
        Err(EngineError::UnknownNumber(_)) => Err(ApiError::NotFound(format!(
            "number {number} is not in the pool"
        ))),
        Err(e) => Err(e.into()),
    }
}

// --- webhook events ---------------------------------------------------------------------------

const EVENT_STATUSES: [&str; 4] = ["received", "processed", "ignored", "failed"];

#[derive(Debug, Deserialize)]
pub struct EventQuery {
    provider: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

fn date(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(raw.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "{name}: {raw:?} is not an RFC 3339 date-time (e.g. 2026-01-05T09:00:00Z): {e}"
                ))
            })
    })
    .transpose()
}

/// `GET /admin/api/webhook-events?provider=&status=&from=&to=&limit=&offset=`: newest first,
/// `from` ≤ received ≤ `to`; phones and emails in the payloads masked.
pub async fn webhook_events<S: Store>(
    State(app): State<AppState<S>>,
    params: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<PageView<WebhookEventRecord>>, ApiError> {
    let params = query(params)?;
    fn non_empty(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
    let provider = non_empty(&params.provider);
    let status = non_empty(&params.status);
    if let Some(status) = status
        && !EVENT_STATUSES.contains(&status)
    {
        return Err(ApiError::BadRequest(format!(
            "status must be one of {}, not {status:?}",
            EVENT_STATUSES.join(", ")
        )));
    }
    let from = date("from", non_empty(&params.from))?;
    let to = date("to", non_empty(&params.to))?;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(ApiError::BadRequest("from is after to".into()));
    }
    let (limit, offset) = pagination(params.limit.as_deref(), params.offset.as_deref())?;
    let filter = WebhookEventFilter {
        provider,
        status,
        from,
        to,
    };
    let mut page = app
        .engine
        .store()
        .webhook_events(&filter, limit, offset)
        .await
        .map_err(db)?;
    for event in &mut page.items {
        mask_pii(&mut event.payload.0);
    }
    Ok(Json(PageView {
        items: page.items,
        total: page.total,
        limit,
        offset,
    }))
}

/// `POST /admin/api/webhook-events/{provider}/{id}/reprocess`: runs a failed event's stored payload
/// through the webhook's own processing ([`payments::reprocess`]). Only a failed event: any other
/// is a 409, as is one that stops being failed while this runs.
pub async fn reprocess_event<S: Store>(
    State(app): State<AppState<S>>,
    Path((provider, event_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let store = app.engine.store();
    let event = store
        .webhook_event(&provider, &event_id)
        .await
        .map_err(db)?
        .ok_or_else(|| ApiError::NotFound(format!("no {provider} event {event_id}")))?;
    if event.status != "failed" {
        return Err(ApiError::Conflict(format!(
            "{provider} event {event_id} is {}: only a failed event can be reprocessed",
            event.status
        )));
    }
    if provider != "stripe" {
        return Err(ApiError::Conflict(format!(
            "{provider} events cannot be reprocessed: only stripe events can"
        )));
    }
    if event.payload.0.get("id").and_then(Value::as_str) != Some(event_id.as_str()) {
        return Err(ApiError::Conflict(format!(
            "the stored payload of {provider} event {event_id} carries another id: not reprocessed"
        )));
    }
    let receipt = payments::reprocess(&app.engine, &event.payload.0)
        .await
        .map_err(|e| match e {
            PaymentError::BadSignature(e) => ApiError::Conflict(e.to_string()),
            PaymentError::BadEvent(e) => ApiError::Conflict(format!(
                "the stored payload of {provider} event {event_id} is not an event: {e}"
            )),
            PaymentError::Failed(e) => ApiError::Engine(e),
        })?;
    if receipt == Receipt::Duplicate {
        return Err(ApiError::Conflict(format!(
            "{provider} event {event_id} was processed meanwhile: not reprocessed"
        )));
    }
    let status = store
        .webhook_event(&provider, &event_id)
        .await
        .map_err(db)?
        .map(|e| e.status);
    Ok(Json(serde_json::json!({
        "provider": provider,
        "event_id": event_id,
        "outcome": receipt.name(),
        "status": status,
    })))
}

// --- the outbox -------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    offset: Option<String>,
}

/// `GET /admin/api/outbound/failed?limit=&offset=`: texts and calls that failed, newest first,
/// each with why (`last_error`: our reason for giving up, `error_code`: Twilio's); phones masked.
/// A person looks at these: the owner was never told what the message said.
pub async fn failed_outbound<S: Store>(
    State(app): State<AppState<S>>,
    params: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<PageView<FailedOutboundRecord>>, ApiError> {
    let params = query(params)?;
    let (limit, offset) = pagination(params.limit.as_deref(), params.offset.as_deref())?;
    let mut page = app
        .engine
        .store()
        .failed_outbound(limit, offset)
        .await
        .map_err(db)?;
    for message in &mut page.items {
        message.to_addr = mask_phone(&message.to_addr);
    }
    Ok(Json(PageView {
        items: page.items,
        total: page.total,
        limit,
        offset,
    }))
}

// --- the funnel -------------------------------------------------------------------------------

/// `GET /admin/api/funnel`: how many of the owners created in the last 7 days are in each state
/// (every state present, 0 when none), and how many there are in all.
pub async fn funnel<S: Store>(State(app): State<AppState<S>>) -> Result<Json<Value>, ApiError> {
    let since = app.engine.now() - Duration::days(FUNNEL_DAYS);
    let counts = app.engine.store().funnel(since).await.map_err(db)?;
    let mut states = serde_json::Map::new();
    for state in StateName::ALL {
        states.insert(state.as_str().to_owned(), Value::from(0));
    }
    let mut total = 0;
    for (state, n) in counts {
        if StateName::parse(&state).is_none() {
            tracing::warn!(event = "FUNNEL_UNKNOWN_STATE", state = %state, owners = n);
        }
        states.insert(state, Value::from(n));
        total += n;
    }
    Ok(Json(serde_json::json!({
        "since": since,
        "states": states,
        "total": total,
    })))
}

/// Reminders sent from each step, and how many owners moved on to another step after one.
pub async fn reminders<S: Store>(State(app): State<AppState<S>>) -> Result<Json<Value>, ApiError> {
    let stats = app.engine.reminder_stats().await.map_err(db)?;
    let sent: i64 = stats.iter().map(|s| s.sent).sum();
    let moved_on: i64 = stats.iter().map(|s| s.moved_on).sum();
    Ok(Json(serde_json::json!({
        "states": stats,
        "sent": sent,
        "moved_on": moved_on,
    })))
}

// --- costs ------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct CostQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

/// A cost report's bound: an RFC 3339 time, or a `YYYY-MM-DD` day (its UTC midnight).
fn bound(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => {
            if let Ok(day) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
                return Ok(day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
            }
            date(name, Some(raw)).map_err(|_| {
                ApiError::BadRequest(format!(
                    "{name}: {raw:?} is not a day (2026-11-01) or an RFC 3339 date-time (2026-11-01T09:00:00Z)"
                ))
            })
        }
    }
}

/// `GET /admin/api/costs?from=&to=&group_by=day|kind|owner`: what was spent with `from` ≤ time <
/// `to` (this month so far by default), grouped, in the reporting currency, with the budgets, this
/// period's alerts and how many new owners are held.
pub async fn costs<S: Store>(
    State(app): State<AppState<S>>,
    query: Result<Query<CostQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = self::query(query)?;
    let group_by = match q.group_by.as_deref().map(str::trim) {
        None | Some("") => GroupBy::Day,
        Some(raw) => GroupBy::parse(raw).ok_or_else(|| {
            ApiError::BadRequest(format!("group_by: {raw:?} is not one of day, kind, owner"))
        })?,
    };
    let now = app.engine.now();
    let (month_start, _) = crate::costs::Period::Month.start(now);
    let from = bound("from", q.from.as_deref())?.unwrap_or(month_start);
    let to = bound("to", q.to.as_deref())?.unwrap_or(now + Duration::seconds(1));
    if to <= from {
        return Err(ApiError::BadRequest(format!(
            "to: {to} is not after from ({from})"
        )));
    }
    let rows = app.engine.cost_report(from, to, group_by).await?;
    let total: i64 = rows.iter().map(|r| r.reporting_micros).sum();
    let budgets = app.engine.budget_report().await?;
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            serde_json::json!({
                // The pool's own costs (numbers bought and rented) belong to no owner.
                "key": r.key.unwrap_or_else(|| "pool".to_owned()),
                "entries": r.entries,
                "quantity": r.quantity,
                "amount": Amount(r.reporting_micros).to_string(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "currency": app.engine.prices().reporting_currency(),
        "from": from,
        "to": to,
        "group_by": match group_by {
            GroupBy::Day => "day",
            GroupBy::Kind => "kind",
            GroupBy::Owner => "owner",
        },
        "total": Amount(total).to_string(),
        "rows": rows,
        "budgets": budgets,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_emails_are_masked_anywhere_in_a_payload() {
        let mut payload = serde_json::json!({
            "id": "evt_1",
            "data": {"object": {
                "customer_details": {"phone": "+447700900123", "email": "jo@smith.example",
                    "name": "Jo Smith"},
                "receipt_email": "not an address",
                "metadata": {"note": "+1 (415) 555-0123", "tags": ["bo@x.io", "keep"]},
                "amount": 2900,
                "client_reference_id": "c_0000000001"
            }}
        });
        mask_pii(&mut payload);
        let object = &payload["data"]["object"];
        assert_eq!(object["customer_details"]["phone"], "+44*******123");
        assert_eq!(object["customer_details"]["email"], "j***@smith.example");
        assert_eq!(object["customer_details"]["name"], "Jo Smith");
        assert_eq!(object["receipt_email"], "***");
        assert_eq!(object["metadata"]["note"], "+1 ***********123");
        assert_eq!(object["metadata"]["tags"][0], "b***@x.io");
        assert_eq!(object["metadata"]["tags"][1], "keep");
        assert_eq!(object["amount"], 2900);
        assert_eq!(object["client_reference_id"], "c_0000000001");
        assert_eq!(payload["id"], "evt_1");
    }

    #[test]
    fn limits_over_the_maximum_or_negative_offsets_are_refused() {
        assert_eq!(pagination(None, None).unwrap(), (DEFAULT_LIMIT, 0));
        assert_eq!(pagination(Some("200"), Some("10")).unwrap(), (200, 10));
        for (limit, offset) in [(Some("201"), None), (Some("0"), None), (None, Some("-1"))] {
            assert!(pagination(limit, offset).is_err(), "{limit:?} {offset:?}");
        }
    }
}
