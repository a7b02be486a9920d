//! X-Twilio-Signature: base64(HMAC-SHA1(auth token, url + sorted params)).
//!
//! The URL must be the public one Twilio requested (from configuration, never the
//! Host header): a proxy in between changes what the server sees.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::{Choice, ConstantTimeEq};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Twilio always signs, so an absent header means the request is not from Twilio (400).
    #[error("missing X-Twilio-Signature header")]
    Missing,
    /// Forged, tampered, or signed for a different URL or token (403).
    #[error("X-Twilio-Signature does not match")]
    Mismatch,
}

/// Computes the signature for a form POST: url + for each param name sorted by bytes, its values sorted and de-duplicated, name+value appended.
///
/// Sorting makes the signature independent of the order the form arrived in; `str`
/// ordering is byte ordering, as Twilio's SDKs use.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut grouped: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        grouped.entry(name).or_default().insert(value);
    }
    let mut mac = new_mac(auth_token);
    mac.update(url.as_bytes());
    for (name, values) in grouped {
        for value in values {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
    }
    BASE64.encode(mac.finalize().into_bytes())
}

/// Validates a form POST. `header` is None when the header was absent. Accepts the URL as given, with any port removed, or with the default port (443 for https, 80 for http) added. Constant-time comparison (subtle).
///
/// Both port forms are tried because Twilio signs whichever form was configured,
/// and the configured form is not always the one we hold. A present but empty
/// header is a `Mismatch`, not `Missing`: the header was sent.
pub fn validate(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if signature_matches(auth_token, url, params, header) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn signature_matches(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: &str,
) -> bool {
    // Every candidate is checked so the time taken does not reveal which one matched.
    let mut any = Choice::from(0);
    for candidate in url_variants(url) {
        let expected = compute(auth_token, &candidate, params);
        any |= expected.as_bytes().ct_eq(header.as_bytes());
    }
    any.into()
}

fn new_mac(key: &str) -> Hmac<Sha1> {
    // HMAC hashes or pads any key to the block size, so this cannot fail.
    Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length")
}

/// The URL as given plus its other port form: without the port if it has one,
/// with the scheme's default port if it has none.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    if let Some(alt) = alternate_port_form(url)
        && alt != url
    {
        out.push(alt);
    }
    out
}

fn alternate_port_form(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // Userinfo may itself contain ':', so the host starts after the last '@'.
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let (userinfo, hostport) = authority.split_at(host_start);
    let host = host_without_port(hostport);
    if host.len() < hostport.len() {
        Some(format!("{scheme}://{userinfo}{host}{tail}"))
    } else {
        let port = match scheme.to_ascii_lowercase().as_str() {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        Some(format!("{scheme}://{userinfo}{host}:{port}{tail}"))
    }
}

/// `hostport` minus a trailing `:digits`; IPv6 literals keep their inner colons.
fn host_without_port(hostport: &str) -> &str {
    let search_from = if hostport.starts_with('[') {
        match hostport.find(']') {
            Some(i) => i + 1,
            None => return hostport,
        }
    } else {
        0
    };
    match hostport[search_from..].rfind(':') {
        Some(i) => {
            let colon = search_from + i;
            let port = &hostport[colon + 1..];
            if port.bytes().all(|b| b.is_ascii_digit()) {
                &hostport[..colon]
            } else {
                hostport
            }
        }
        None => hostport,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &str = "12345";
    const BASE: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn vector_params() -> Vec<(String, String)> {
        p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    #[test]
    fn vector_base_url() {
        assert_eq!(
            compute(TOKEN, BASE, &vector_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert_eq!(
            validate(
                TOKEN,
                BASE,
                &vector_params(),
                Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")
            ),
            Ok(())
        );
    }

    #[test]
    fn vector_https_443() {
        let url = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert_eq!(
            compute(TOKEN, url, &vector_params()),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        assert_eq!(
            validate(
                TOKEN,
                url,
                &vector_params(),
                Some("kvajT1Ptam85bY51eRf/AJRuM3w=")
            ),
            Ok(())
        );
    }

    #[test]
    fn vector_http_80() {
        let url = "http://mycompany.com:80/myapp.php?foo=1&bar=2";
        assert_eq!(
            compute(TOKEN, url, &vector_params()),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        );
        assert_eq!(
            validate(
                TOKEN,
                url,
                &vector_params(),
                Some("0ZXoZLH/DfblKGATFgpif+LLRf4=")
            ),
            Ok(())
        );
    }

    #[test]
    fn vector_http_1234() {
        let url = "http://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert_eq!(
            compute(TOKEN, url, &vector_params()),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        );
        assert_eq!(
            validate(
                TOKEN,
                url,
                &vector_params(),
                Some("Zmvh+3yNM1Phv2jhDCwEM3q5ebU=")
            ),
            Ok(())
        );
    }

    #[test]
    fn vector_duplicate_values() {
        let params = p(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            compute(TOKEN, BASE, &params),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
        assert_eq!(
            validate(TOKEN, BASE, &params, Some("IK+Dwps556ElfBT0I3Rgjkr1wJU=")),
            Ok(())
        );
    }

    /// Twilio's JSON-body example URL: only its URL is signed (no JSON webhook is served, but
    /// the vector pins the URL-only form of the signature).
    const JSON_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";

    #[test]
    fn vector_url_only() {
        assert_eq!(
            compute(TOKEN, JSON_URL, &[]),
            "a9nBmqA0ju/hNViExpshrM61xv4="
        );
    }

    #[test]
    fn missing_header() {
        assert_eq!(
            validate(TOKEN, BASE, &vector_params(), None),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn wrong_signature() {
        assert_eq!(
            validate(
                TOKEN,
                BASE,
                &vector_params(),
                Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            validate(TOKEN, BASE, &vector_params(), Some("")),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn wrong_token() {
        assert_eq!(
            validate(
                "54321",
                BASE,
                &vector_params(),
                Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn portless_signature_accepted_on_443_url() {
        let url = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert_eq!(
            validate(
                TOKEN,
                url,
                &vector_params(),
                Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")
            ),
            Ok(())
        );
    }

    #[test]
    fn port_443_signature_accepted_on_portless_url() {
        assert_eq!(
            validate(
                TOKEN,
                BASE,
                &vector_params(),
                Some("kvajT1Ptam85bY51eRf/AJRuM3w=")
            ),
            Ok(())
        );
    }

    #[test]
    fn port_80_signature_accepted_on_portless_http_url() {
        let url = "http://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            validate(
                TOKEN,
                url,
                &vector_params(),
                Some("0ZXoZLH/DfblKGATFgpif+LLRf4=")
            ),
            Ok(())
        );
    }

    #[test]
    fn non_default_port_signature_rejected_on_portless_url() {
        let url = "http://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            validate(
                TOKEN,
                url,
                &vector_params(),
                Some("Zmvh+3yNM1Phv2jhDCwEM3q5ebU=")
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tampered_param_rejected() {
        let mut params = vector_params();
        params[2].1 = "9999".to_owned();
        assert_eq!(
            validate(TOKEN, BASE, &params, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn added_param_rejected() {
        let mut params = vector_params();
        params.push(("Body".to_owned(), "hi".to_owned()));
        assert_eq!(
            validate(TOKEN, BASE, &params, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn port_variants() {
        assert_eq!(
            alternate_port_form("https://h.com/x?a=1").as_deref(),
            Some("https://h.com:443/x?a=1")
        );
        assert_eq!(
            alternate_port_form("HTTP://h.com").as_deref(),
            Some("HTTP://h.com:80")
        );
        assert_eq!(
            alternate_port_form("https://h.com?a=b:1").as_deref(),
            Some("https://h.com:443?a=b:1")
        );
        assert_eq!(
            alternate_port_form("https://h.com:8443/x").as_deref(),
            Some("https://h.com/x")
        );
        assert_eq!(
            alternate_port_form("https://u:p@h.com/x").as_deref(),
            Some("https://u:p@h.com:443/x")
        );
        assert_eq!(
            alternate_port_form("https://u:p@h.com:443/x").as_deref(),
            Some("https://u:p@h.com/x")
        );
        assert_eq!(
            alternate_port_form("https://[::1]/x").as_deref(),
            Some("https://[::1]:443/x")
        );
        assert_eq!(
            alternate_port_form("https://[::1]:8080/x").as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(alternate_port_form("ftp://h.com/x"), None);
        assert_eq!(alternate_port_form("not a url"), None);
    }

    proptest! {
        #[test]
        fn compute_then_validate_round_trips(
            token in ".{0,40}",
            path in "[a-zA-Z0-9/._-]{0,30}",
            params in proptest::collection::vec((".{0,12}", ".{0,20}"), 0..12),
        ) {
            let url = format!("https://example.com/{path}");
            let sig = compute(&token, &url, &params);
            prop_assert_eq!(validate(&token, &url, &params, Some(&sig)), Ok(()));
            let with_port = format!("https://example.com:443/{path}");
            prop_assert_eq!(validate(&token, &with_port, &params, Some(&sig)), Ok(()));
        }

        #[test]
        fn order_of_params_does_not_matter(
            params in proptest::collection::vec(("[a-c]{1,2}", "[x-z]{0,2}"), 0..10),
        ) {
            let mut reversed = params.clone();
            reversed.reverse();
            prop_assert_eq!(compute(TOKEN, BASE, &params), compute(TOKEN, BASE, &reversed));
        }
    }
}
