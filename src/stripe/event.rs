//! Stripe events: the envelope, and what each event type means for an owner's payment.

use serde::Deserialize;

use crate::store::StripeKind;

/// The parts of an event we read. Everything else is kept in the stored payload.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
#[error("not a Stripe event: {0}")]
pub struct BadEvent(String);

impl Envelope {
    pub fn parse(raw: &[u8]) -> Result<(Envelope, serde_json::Value), BadEvent> {
        let mut value: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| BadEvent(e.to_string()))?;
        strip_nul(&mut value);
        let envelope: Envelope =
            serde_json::from_value(value.clone()).map_err(|e| BadEvent(e.to_string()))?;
        let id_ok = envelope.id.len() <= 255
            && envelope
                .id
                .strip_prefix("evt_")
                .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if !id_ok {
            return Err(BadEvent(format!("id {:?} is not an event id", envelope.id)));
        }
        let type_ok = (1..=100).contains(&envelope.event_type.len())
            && envelope
                .event_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
        if !type_ok {
            return Err(BadEvent(format!(
                "type {:?} is not an event type",
                envelope.event_type
            )));
        }
        Ok((envelope, value))
    }
}

/// Removes U+0000 from every string and key. JSON may carry `\u0000`, but PostgreSQL refuses it in
/// `jsonb` and `text`: stored as it came, such an event would fail on every retry. No field we read
/// has a NUL in a genuine event, so nothing of meaning is lost.
fn strip_nul(value: &mut serde_json::Value) {
    let clean = |s: &str| s.replace('\0', "");
    match value {
        serde_json::Value::String(s) if s.contains('\0') => *s = clean(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nul),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (clean(&k), v))
                    .collect();
            }
            map.values_mut().for_each(strip_nul);
        }
        _ => {}
    }
}

/// What an event asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentAction {
    /// The owner named by `client_reference_id` has paid; the Stripe ids tie later events to them.
    Paid {
        client_reference_id: Option<String>,
        links: Vec<(StripeKind, String)>,
    },
    /// Payment was taken back: find the owner by any of these.
    Revoked { by: Vec<(StripeKind, String)> },
    /// Nothing to do; the reason is stored with the event.
    Ignore(String),
}

fn text(object: &serde_json::Value, field: &str) -> Option<String> {
    object
        .get(field)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Decides what an event means. Pure: the caller finds the owner and applies it.
pub fn classify(envelope: &Envelope) -> PaymentAction {
    let object = &envelope.data.object;
    let links = |pairs: &[(StripeKind, &str)]| -> Vec<(StripeKind, String)> {
        pairs
            .iter()
            .filter_map(|(kind, field)| text(object, field).map(|id| (*kind, id)))
            // Only what could be a Stripe id (`cus_...`) is linked: anything else could never
            // match a later event, and a huge one would not fit the database's index.
            .filter(|(_, id)| {
                id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
            .collect()
    };
    let paid = || PaymentAction::Paid {
        client_reference_id: text(object, "client_reference_id"),
        links: links(&[
            (StripeKind::Customer, "customer"),
            (StripeKind::Subscription, "subscription"),
            (StripeKind::PaymentIntent, "payment_intent"),
        ]),
    };
    match envelope.event_type.as_str() {
        "checkout.session.completed" => match text(object, "payment_status").as_deref() {
            Some("paid") => paid(),
            other => PaymentAction::Ignore(format!(
                "checkout completed with payment_status {}: waiting for async_payment_succeeded",
                other.unwrap_or("missing")
            )),
        },
        "checkout.session.async_payment_succeeded" => paid(),
        "customer.subscription.deleted" => PaymentAction::Revoked {
            by: links(&[
                (StripeKind::Subscription, "id"),
                (StripeKind::Customer, "customer"),
            ]),
        },
        "charge.refunded" => {
            let amount = object.get("amount").and_then(|v| v.as_i64());
            let refunded = object.get("amount_refunded").and_then(|v| v.as_i64());
            let full = object.get("refunded").and_then(|v| v.as_bool()) == Some(true)
                || matches!((amount, refunded), (Some(a), Some(r)) if r >= a && a > 0);
            if full {
                PaymentAction::Revoked {
                    by: links(&[
                        (StripeKind::PaymentIntent, "payment_intent"),
                        (StripeKind::Customer, "customer"),
                    ]),
                }
            } else {
                PaymentAction::Ignore("partial refund: the owner stays paid".into())
            }
        }
        other => PaymentAction::Ignore(format!("event type {other} is not one we act on")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, object: serde_json::Value) -> Envelope {
        let raw = serde_json::json!({
            "id": "evt_1", "object": "event", "type": event_type, "data": { "object": object }
        });
        Envelope::parse(raw.to_string().as_bytes()).unwrap().0
    }

    #[test]
    fn a_paid_checkout_pays_the_referenced_owner() {
        let e = event(
            "checkout.session.completed",
            serde_json::json!({"payment_status": "paid", "client_reference_id": "c_1",
                "customer": "cus_1", "subscription": "sub_1", "payment_intent": null}),
        );
        assert_eq!(
            classify(&e),
            PaymentAction::Paid {
                client_reference_id: Some("c_1".into()),
                links: vec![
                    (StripeKind::Customer, "cus_1".into()),
                    (StripeKind::Subscription, "sub_1".into())
                ],
            }
        );
    }

    #[test]
    fn an_unpaid_checkout_waits_for_the_async_payment() {
        let e = event(
            "checkout.session.completed",
            serde_json::json!({"payment_status": "unpaid", "client_reference_id": "c_1"}),
        );
        assert!(matches!(classify(&e), PaymentAction::Ignore(_)));
        let e = event(
            "checkout.session.async_payment_succeeded",
            serde_json::json!({"payment_status": "paid", "client_reference_id": "c_1"}),
        );
        assert!(matches!(classify(&e), PaymentAction::Paid { .. }));
    }

    #[test]
    fn cancellation_and_full_refund_revoke_but_partial_refund_does_not() {
        let e = event(
            "customer.subscription.deleted",
            serde_json::json!({"id": "sub_1", "customer": "cus_1"}),
        );
        assert_eq!(
            classify(&e),
            PaymentAction::Revoked {
                by: vec![
                    (StripeKind::Subscription, "sub_1".into()),
                    (StripeKind::Customer, "cus_1".into())
                ]
            }
        );
        let full = event(
            "charge.refunded",
            serde_json::json!({"amount": 2900, "amount_refunded": 2900, "refunded": true,
                "payment_intent": "pi_1"}),
        );
        assert!(matches!(classify(&full), PaymentAction::Revoked { .. }));
        let partial = event(
            "charge.refunded",
            serde_json::json!({"amount": 2900, "amount_refunded": 900, "refunded": false}),
        );
        assert!(matches!(classify(&partial), PaymentAction::Ignore(_)));
    }

    #[test]
    fn garbage_is_not_an_event() {
        assert!(Envelope::parse(b"not json").is_err());
        assert!(Envelope::parse(br#"{"id":"x","type":"t","data":{"object":{}}}"#).is_err());
        assert!(Envelope::parse(br#"{"id":"evt_1","type":"t"}"#).is_err());
    }
}
