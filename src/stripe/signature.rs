//! Stripe-Signature: `t=<unix>,v1=<hex>[,v1=...]`, HMAC-SHA256 over `"{t}.{raw body}"`.
//!
//! Verified by hand because SDK helpers that keep only the last `v1` reject valid
//! headers during secret rotation. Verify the raw bytes before parsing JSON: any
//! re-serialisation breaks the signature.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeSignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    /// Only `v1` is trusted; accepting `v0` or unknown schemes would allow a downgrade.
    #[error("no v1 signature in Stripe-Signature header")]
    NoV1,
    /// Returned only once a signature matched, so it means "genuine but stale or
    /// clock skew", never "forged".
    #[error("Stripe-Signature timestamp outside the tolerance")]
    OutsideTolerance,
    #[error("no v1 signature matches any configured secret")]
    Mismatch,
}

/// Stripe's SDKs use five minutes; retries are re-signed with a fresh `t`, so this only bounds replays.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// header None when absent; payload is the raw body bytes; secrets are whole `whsec_...` strings (several during rotation).
///
/// Accepts if any `v1` matches any secret, then requires `|now - t| <= tolerance`
/// (the future bound guards against a peer whose clock runs ahead being replayable
/// for longer). A negative tolerance counts as zero. The signature is checked
/// before the timestamp, as the SDKs do, so `OutsideTolerance` implies authenticity.
pub fn verify(
    header: Option<&str>,
    payload: &[u8],
    secrets: &[String],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), StripeSignatureError> {
    let header = header.ok_or(StripeSignatureError::Missing)?;
    let parsed = parse_header(header)?;
    if parsed.v1.is_empty() {
        return Err(StripeSignatureError::NoV1);
    }

    // No early exit: timing must not reveal which secret or signature matched.
    let mut any = Choice::from(0);
    for secret in secrets {
        let expected = signature_hex(payload, secret, parsed.t);
        for candidate in &parsed.v1 {
            any |= expected.as_bytes().ct_eq(candidate.as_bytes());
        }
    }
    if !bool::from(any) {
        return Err(StripeSignatureError::Mismatch);
    }

    let tolerance = tolerance_secs.max(0);
    let too_old = parsed.t < now_unix.saturating_sub(tolerance);
    let too_new = parsed.t > now_unix.saturating_add(tolerance);
    if too_old || too_new {
        return Err(StripeSignatureError::OutsideTolerance);
    }
    Ok(())
}

/// For tests and tools: builds a header `t=<t>,v1=<hex>` signing payload with secret.
pub fn sign(payload: &[u8], secret: &str, t: i64) -> String {
    format!("t={t},v1={}", signature_hex(payload, secret, t))
}

struct ParsedHeader<'a> {
    t: i64,
    v1: Vec<&'a str>,
}

/// Unknown keys and items without `=` are ignored so Stripe can add fields; a
/// missing, repeated or non-numeric `t` is malformed because the signature binds it.
fn parse_header(header: &str) -> Result<ParsedHeader<'_>, StripeSignatureError> {
    let mut t = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => {
                if t.is_some() {
                    return Err(StripeSignatureError::Malformed);
                }
                t = Some(parse_timestamp(value).ok_or(StripeSignatureError::Malformed)?);
            }
            "v1" => v1.push(value),
            _ => {}
        }
    }
    let t = t.ok_or(StripeSignatureError::Malformed)?;
    Ok(ParsedHeader { t, v1 })
}

/// Digits only: `i64::from_str` would also take a sign, which Stripe never sends.
fn parse_timestamp(value: &str) -> Option<i64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn signature_hex(payload: &[u8], secret: &str, t: i64) -> String {
    // HMAC hashes or pads any key to the block size, so this cannot fail.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex_lower(&mac.finalize().into_bytes())
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: i64 = 1_492_774_577;
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"checkout.session.completed"}"#;
    const SIG_TEST: &str = "8ab9655b7af9df2f1a9f827e46b7203d886d1e3de561ba20cedac6527bbd6ee9";
    const SIG_OLD: &str = "1f2377e0039fea4beebbfab74e19fb877db908196b42516e19b8c32a46beb286";

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn check(header: &str, secret_list: &[&str]) -> Result<(), StripeSignatureError> {
        verify(
            Some(header),
            BODY,
            &secrets(secret_list),
            T,
            DEFAULT_TOLERANCE_SECS,
        )
    }

    #[test]
    fn vector_test_secret() {
        assert_eq!(signature_hex(BODY, "whsec_test_secret", T), SIG_TEST);
        assert_eq!(
            check(&format!("t={T},v1={SIG_TEST}"), &["whsec_test_secret"]),
            Ok(())
        );
    }

    #[test]
    fn vector_old_secret() {
        assert_eq!(signature_hex(BODY, "whsec_old_secret", T), SIG_OLD);
        assert_eq!(
            check(&format!("t={T},v1={SIG_OLD}"), &["whsec_old_secret"]),
            Ok(())
        );
    }

    #[test]
    fn rotation_header_accepted_by_each_secret_alone() {
        let header = format!("t={T},v1={SIG_TEST},v1={SIG_OLD}");
        assert_eq!(check(&header, &["whsec_test_secret"]), Ok(()));
        assert_eq!(check(&header, &["whsec_old_secret"]), Ok(()));
        assert_eq!(check(&header, &["whsec_other", "whsec_old_secret"]), Ok(()));
        assert_eq!(
            check(&header, &["whsec_other"]),
            Err(StripeSignatureError::Mismatch)
        );
    }

    #[test]
    fn single_v1_accepted_by_either_configured_secret() {
        let header = format!("t={T},v1={SIG_OLD}");
        assert_eq!(
            check(&header, &["whsec_test_secret", "whsec_old_secret"]),
            Ok(())
        );
    }

    #[test]
    fn malformed_header() {
        for header in [
            "i'm not even a real signature header",
            "",
            "v1=abc",
            "t=,v1=abc",
            "t=abc,v1=abc",
            "t=-5,v1=abc",
            "t=99999999999999999999,v1=abc",
            "t=1,t=2,v1=abc",
        ] {
            assert_eq!(
                check(header, &["whsec_test_secret"]),
                Err(StripeSignatureError::Malformed),
                "{header}"
            );
        }
    }

    #[test]
    fn only_v0_is_no_v1() {
        let header = format!("t={T},v0={SIG_TEST}");
        assert_eq!(
            check(&header, &["whsec_test_secret"]),
            Err(StripeSignatureError::NoV1)
        );
    }

    #[test]
    fn extra_bad_v1_still_accepted() {
        let header = format!("t={T},v1={SIG_TEST},v1=bad_signature");
        assert_eq!(check(&header, &["whsec_test_secret"]), Ok(()));
        let header = format!("t={T},v1=bad_signature,v1={SIG_TEST}");
        assert_eq!(check(&header, &["whsec_test_secret"]), Ok(()));
    }

    #[test]
    fn unknown_items_and_spaces_tolerated() {
        let header = format!("t={T}, v1={SIG_TEST}, v0=zz, x=y, junk");
        assert_eq!(check(&header, &["whsec_test_secret"]), Ok(()));
    }

    #[test]
    fn uppercase_hex_rejected() {
        let header = format!("t={T},v1={}", SIG_TEST.to_uppercase());
        assert_eq!(
            check(&header, &["whsec_test_secret"]),
            Err(StripeSignatureError::Mismatch)
        );
    }

    #[test]
    fn tampered_body_rejected() {
        let header = format!("t={T},v1={SIG_TEST}");
        assert_eq!(
            verify(
                Some(&header),
                br#"{"id":"evt_2","object":"event","type":"checkout.session.completed"}"#,
                &secrets(&["whsec_test_secret"]),
                T,
                DEFAULT_TOLERANCE_SECS,
            ),
            Err(StripeSignatureError::Mismatch)
        );
    }

    #[test]
    fn changed_timestamp_rejected() {
        let header = format!("t={},v1={SIG_TEST}", T + 1);
        assert_eq!(
            check(&header, &["whsec_test_secret"]),
            Err(StripeSignatureError::Mismatch)
        );
    }

    #[test]
    fn no_secrets_is_mismatch() {
        let header = format!("t={T},v1={SIG_TEST}");
        assert_eq!(check(&header, &[]), Err(StripeSignatureError::Mismatch));
    }

    #[test]
    fn too_old_rejected() {
        let header = format!("t={T},v1={SIG_TEST}");
        let s = secrets(&["whsec_test_secret"]);
        let edge = T + DEFAULT_TOLERANCE_SECS;
        assert_eq!(
            verify(Some(&header), BODY, &s, edge, DEFAULT_TOLERANCE_SECS),
            Ok(())
        );
        assert_eq!(
            verify(Some(&header), BODY, &s, edge + 1, DEFAULT_TOLERANCE_SECS),
            Err(StripeSignatureError::OutsideTolerance)
        );
    }

    #[test]
    fn too_far_in_future_rejected() {
        let header = format!("t={T},v1={SIG_TEST}");
        let s = secrets(&["whsec_test_secret"]);
        let edge = T - DEFAULT_TOLERANCE_SECS;
        assert_eq!(
            verify(Some(&header), BODY, &s, edge, DEFAULT_TOLERANCE_SECS),
            Ok(())
        );
        assert_eq!(
            verify(Some(&header), BODY, &s, edge - 1, DEFAULT_TOLERANCE_SECS),
            Err(StripeSignatureError::OutsideTolerance)
        );
    }

    #[test]
    fn stale_forgery_reports_mismatch() {
        let header = format!("t={T},v1=deadbeef");
        assert_eq!(
            verify(
                Some(&header),
                BODY,
                &secrets(&["whsec_test_secret"]),
                T + 10_000,
                DEFAULT_TOLERANCE_SECS,
            ),
            Err(StripeSignatureError::Mismatch)
        );
    }

    #[test]
    fn extreme_clock_values_do_not_overflow() {
        let header = sign(BODY, "whsec_test_secret", T);
        let s = secrets(&["whsec_test_secret"]);
        assert_eq!(verify(Some(&header), BODY, &s, T, i64::MAX), Ok(()));
        assert_eq!(
            verify(Some(&header), BODY, &s, i64::MIN, DEFAULT_TOLERANCE_SECS),
            Err(StripeSignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify(Some(&header), BODY, &s, i64::MAX, DEFAULT_TOLERANCE_SECS),
            Err(StripeSignatureError::OutsideTolerance)
        );
        assert_eq!(verify(Some(&header), BODY, &s, T, -1), Ok(()));
    }

    #[test]
    fn missing_header() {
        assert_eq!(
            verify(
                None,
                BODY,
                &secrets(&["whsec_test_secret"]),
                T,
                DEFAULT_TOLERANCE_SECS
            ),
            Err(StripeSignatureError::Missing)
        );
    }

    #[test]
    fn sign_matches_vectors() {
        assert_eq!(
            sign(BODY, "whsec_test_secret", T),
            format!("t={T},v1={SIG_TEST}")
        );
        assert_eq!(
            sign(BODY, "whsec_old_secret", T),
            format!("t={T},v1={SIG_OLD}")
        );
    }

    proptest! {
        #[test]
        fn sign_then_verify_round_trips(
            payload in prop::collection::vec(any::<u8>(), 0..256),
            secret in "whsec_[a-zA-Z0-9]{0,32}",
            t in 0i64..4_000_000_000,
            skew in -DEFAULT_TOLERANCE_SECS..=DEFAULT_TOLERANCE_SECS,
        ) {
            let header = sign(&payload, &secret, t);
            let s = vec![secret];
            prop_assert_eq!(
                verify(Some(&header), &payload, &s, t + skew, DEFAULT_TOLERANCE_SECS),
                Ok(())
            );
        }
    }
}
