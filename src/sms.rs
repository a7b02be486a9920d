//! SMS encoding facts: which characters fit GSM-7, and how many segments Twilio bills for a text.
//!
//! One character outside GSM 03.38 (a curly apostrophe, an emoji, a lowercase `ç`) switches the whole
//! message to UCS-2, which more than halves the characters per segment.

/// Characters in one GSM-7 segment when the message fits in one.
const GSM7_SINGLE: usize = 160;
/// Characters per segment of a concatenated GSM-7 message (the rest carries the UDH).
const GSM7_PART: usize = 153;
/// UTF-16 units in one UCS-2 segment when the message fits in one.
const UCS2_SINGLE: usize = 70;
/// UTF-16 units per segment of a concatenated UCS-2 message.
const UCS2_PART: usize = 67;

/// How a char is encoded in GSM-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gsm7 {
    /// In the basic table: one septet.
    Basic,
    /// In the extension table: escape plus one septet.
    Extended,
}

fn gsm7_class(c: char) -> Option<Gsm7> {
    match c {
        // The basic table, in code order (0x1B is the escape to the extension table, not a char).
        '@' | '£' | '$' | '¥' | 'è' | 'é' | 'ù' | 'ì' | 'ò' | 'Ç' | '\n' | 'Ø' | 'ø' | '\r'
        | 'Å' | 'å' => Some(Gsm7::Basic),
        'Δ' | '_' | 'Φ' | 'Γ' | 'Λ' | 'Ω' | 'Π' | 'Ψ' | 'Σ' | 'Θ' | 'Ξ' | 'Æ' | 'æ' | 'ß' | 'É' => {
            Some(Gsm7::Basic)
        }
        ' ' | '!' | '"' | '#' | '¤' | '%' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | '-'
        | '.' | '/' => Some(Gsm7::Basic),
        '0'..='9' | ':' | ';' | '<' | '=' | '>' | '?' => Some(Gsm7::Basic),
        '¡' | 'A'..='Z' | 'Ä' | 'Ö' | 'Ñ' | 'Ü' | '§' => Some(Gsm7::Basic),
        '¿' | 'a'..='z' | 'ä' | 'ö' | 'ñ' | 'ü' | 'à' => Some(Gsm7::Basic),
        // The extension table.
        '\u{0C}' | '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' | '€' => Some(Gsm7::Extended),
        _ => None,
    }
}

/// True when every char is in the GSM 03.38 basic set or its extension table.
pub fn is_gsm7(text: &str) -> bool {
    first_non_gsm7(text).is_none()
}

/// The first char that would force UCS-2, if any (for error messages).
pub fn first_non_gsm7(text: &str) -> Option<char> {
    text.chars().find(|&c| gsm7_class(c).is_none())
}

/// How many SMS segments Twilio bills: GSM-7 160 single / 153 per part (extension chars form feed
/// `[ \ ] ^ { | } ~ €` cost 2); otherwise UCS-2 70 single / 67 per part counted in UTF-16 units.
/// Empty text is 1 segment.
///
/// When a message is split, a character is never cut in half: an extension char's escape pair (GSM-7)
/// or a surrogate pair (UCS-2) that would straddle a boundary moves whole to the next segment, so a
/// long text full of such chars can need one segment more than a plain division suggests.
pub fn segments(text: &str) -> usize {
    if is_gsm7(text) {
        let costs = text.chars().map(|c| match gsm7_class(c) {
            Some(Gsm7::Extended) => 2,
            _ => 1,
        });
        pack(costs, GSM7_SINGLE, GSM7_PART)
    } else {
        pack(text.chars().map(char::len_utf16), UCS2_SINGLE, UCS2_PART)
    }
}

/// Segments needed for chars of the given costs: one if the total fits `single`, otherwise chars
/// packed in order into parts of `part` units without splitting any char.
fn pack(costs: impl Iterator<Item = usize> + Clone, single: usize, part: usize) -> usize {
    let total: usize = costs.clone().sum();
    if total <= single {
        return 1;
    }
    let mut parts = 1;
    let mut used = 0;
    for cost in costs {
        if used + cost > part {
            parts += 1;
            used = 0;
        }
        used += cost;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn plain_text_matches_the_simple_formula(n in 0usize..1000) {
            let expected = if n <= 160 { 1 } else { n.div_ceil(153) };
            prop_assert_eq!(segments(&"a".repeat(n)), expected);
        }

        #[test]
        fn segments_never_panic_and_agree_with_first_non_gsm7(text in any::<String>()) {
            let n = segments(&text);
            prop_assert!(n >= 1);
            prop_assert_eq!(is_gsm7(&text), first_non_gsm7(&text).is_none());
        }
    }

    #[test]
    fn plain_gsm7_uses_160_then_153_per_part() {
        assert_eq!(segments(""), 1);
        assert_eq!(segments("a"), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        assert_eq!(segments(&"a".repeat(459)), 3);
        assert_eq!(segments(&"a".repeat(460)), 4);
    }

    #[test]
    fn extension_chars_cost_two() {
        assert!(is_gsm7("€[]{}|^~\\\u{0C}"));
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        assert_eq!(segments(&format!("{}{{", "a".repeat(158))), 1);
        assert_eq!(segments(&format!("{}{{", "a".repeat(159))), 2);
        // An escape pair never straddles a part boundary: 152 + 2 moves the `€` to part two.
        assert_eq!(
            segments(&format!("{}€{}", "a".repeat(152), "a".repeat(152))),
            3
        );
        assert_eq!(
            segments(&format!("{}€{}", "a".repeat(151), "a".repeat(153))),
            2
        );
    }

    #[test]
    fn the_whole_basic_table_is_gsm7() {
        let basic = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                     ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
        assert_eq!(first_non_gsm7(basic), None);
        assert_eq!(basic.chars().count(), 127, "128 codes less the escape");
        assert_eq!(segments(basic), 1);
    }

    #[test]
    fn one_emoji_switches_to_ucs2() {
        let text = format!("{}😀", "a".repeat(68));
        assert!(!is_gsm7(&text));
        assert_eq!(first_non_gsm7(&text), Some('😀'));
        assert_eq!(segments(&text), 1, "68 + 2 units = 70");
        assert_eq!(segments(&format!("{}😀", "a".repeat(69))), 2);
        assert_eq!(segments(&format!("{}😀", "a".repeat(132))), 2, "134 units");
        assert_eq!(segments(&format!("{}😀", "a".repeat(133))), 3, "135 units");
        // A surrogate pair never straddles a part boundary.
        assert_eq!(
            segments(&format!("{}😀{}", "a".repeat(66), "a".repeat(65))),
            2
        );
        assert_eq!(
            segments(&format!("{}😀{}", "a".repeat(66), "a".repeat(66))),
            3
        );
        assert_eq!(segments(&"é".repeat(70)), 1, "é alone stays GSM-7");
    }

    #[test]
    fn ucs2_counts_utf16_units() {
        let text = format!("{}ç", "a".repeat(69));
        assert_eq!(segments(&text), 1);
        assert_eq!(segments(&format!("{}ç", "a".repeat(70))), 2);
        assert_eq!(segments(&"ç".repeat(134)), 2);
        assert_eq!(segments(&"ç".repeat(135)), 3);
    }

    #[test]
    fn lookalikes_are_not_gsm7() {
        assert_eq!(first_non_gsm7("We’ll call"), Some('’'));
        assert_eq!(segments("We’ll call"), 1);
        assert!(!is_gsm7("“quoted”"));
        assert!(!is_gsm7("a – b"), "en dash");
        assert!(!is_gsm7("`"), "backtick");
        assert!(!is_gsm7("ç"), "only uppercase Ç is GSM-7");
        assert!(is_gsm7("Ç"));
        for c in ['á', 'í', 'ó', 'ú', '\t', '\u{1B}', '\u{0}'] {
            assert!(!is_gsm7(&c.to_string()), "{c:?}");
        }
        assert!(is_gsm7("We'll call \"you\" - ok? 100% £5 €5 a_b"));
    }

    #[test]
    fn a_curly_apostrophe_costs_a_long_message_extra_segments() {
        let straight = format!("{}'", "a".repeat(150));
        let curly = format!("{}’", "a".repeat(150));
        assert_eq!(segments(&straight), 1);
        assert_eq!(segments(&curly), 3);
    }
}
