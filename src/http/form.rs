//! A strict `application/x-www-form-urlencoded` parser: unlike the lenient ones, bytes that are not
//! UTF-8 (raw or percent-encoded) are an error, not a silent U+FFFD.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("form body is not valid UTF-8")]
    NotUtf8,
    #[error("form body has a malformed percent escape")]
    BadEscape,
}

/// The pairs in order, repeated names kept (Twilio signs every value).
pub fn parse(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    if std::str::from_utf8(body).is_err() {
        return Err(FormError::NotUtf8);
    }
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

fn decode(raw: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or(FormError::BadEscape)?;
                let hex = std::str::from_utf8(hex).map_err(|_| FormError::BadEscape)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| FormError::BadEscape)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

/// A field the request must carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing form field {0}")]
pub struct MissingField(pub &'static str);

/// The first value of `name`, which must be there and not empty.
pub fn required<'a>(
    pairs: &'a [(String, String)],
    name: &'static str,
) -> Result<&'a str, MissingField> {
    optional(pairs, name).ok_or(MissingField(name))
}

/// The first value of `name`, which must be there but may be empty (an SMS `Body`).
pub fn present<'a>(
    pairs: &'a [(String, String)],
    name: &'static str,
) -> Result<&'a str, MissingField> {
    get(pairs, name).ok_or(MissingField(name))
}

/// The first value of `name`, unless absent or empty.
pub fn optional<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    get(pairs, name).filter(|v| !v.is_empty())
}

/// The first value of `name`.
pub fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_escapes_and_keeps_repeats() {
        let pairs = parse(b"Body=Plumber+in+Leeds%21&From=%2B447700900123&D=1&D=2&Empty=").unwrap();
        assert_eq!(get(&pairs, "Body"), Some("Plumber in Leeds!"));
        assert_eq!(get(&pairs, "From"), Some("+447700900123"));
        assert_eq!(pairs.iter().filter(|(n, _)| n == "D").count(), 2);
        assert_eq!(get(&pairs, "Empty"), Some(""));
    }

    #[test]
    fn rejects_bytes_that_are_not_utf8() {
        assert_eq!(parse(b"Body=%FF%FE"), Err(FormError::NotUtf8));
        assert_eq!(parse(b"Body=\xff"), Err(FormError::NotUtf8));
        assert_eq!(parse(b"Body=%F"), Err(FormError::BadEscape));
        assert_eq!(parse(b"Body=%zz"), Err(FormError::BadEscape));
        assert_eq!(
            parse("Body=%F0%9F%91%8D".as_bytes()).unwrap()[0].1,
            "\u{1f44d}"
        );
    }
}
