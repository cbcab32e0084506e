//! The `Email` newtype: parsed once, compared case-insensitively.

use std::fmt;

/// An email address as LastPass uses it for a username.
///
/// Parsing trims surrounding ASCII white space and folds ASCII letters to lower case, so two
/// spellings of the same address are equal (LastPass compares usernames case-insensitively).
///
/// Only printable ASCII is accepted: we do not do internationalised addresses (IDN, SMTPUTF8),
/// so any non-ASCII character is rejected, and with it every zero-width character (U+200B..U+200D,
/// U+2060, U+FEFF) and bidi control (U+200E, U+200F, U+202A..U+202E, U+2066..U+2069); control
/// characters and white space inside the address are rejected too. Case folding uses ASCII rules
/// only: Unicode folding maps e.g. the Kelvin sign U+212A to `k`, so a command about
/// `nancy.clar\u{212A}9@example.com` would reach the account `nancy.clark9@example.com`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Email(String);

/// Why a string is not an email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid email address: {0}")]
pub struct InvalidEmail(pub String);

impl Email {
    /// Longest address accepted (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        // ASCII white space only: a non-ASCII space (U+00A0, U+3000...) is not trimmed away but
        // rejected below, like every other non-ASCII character.
        let s = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        let bad = || InvalidEmail(shown(raw, 80));
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || local.len() > 64
            || domain.len() < 3
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
            || !s.bytes().all(|b| b.is_ascii_graphic())
        {
            // `is_ascii_graphic`: U+0021..U+007E, so no control character, no white space and
            // nothing non-ASCII (zero-width characters and bidi controls included).
            return Err(bad());
        }
        Ok(Email(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// At most `max` characters of `s` for an error message, with control characters, zero-width
/// characters and bidi controls escaped (`\u{202e}`), so that the message shows what was sent and
/// cannot reorder or hide the text around it in a log or an event.
fn shown(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_control() || is_invisible(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Zero-width characters (U+200B..U+200D, U+2060, U+FEFF) and bidi controls (U+200E, U+200F,
/// U+202A..U+202E, U+2066..U+2069): invisible, or reordering the text around them, so that what
/// is shown is not what is sent. Never accepted in a value that reaches LastPass.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
    )
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Email::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_folds_case() {
        let e = Email::parse("  Jane.Doe@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "jane.doe@example.com");
        assert_eq!(e, Email::parse("jane.doe@example.com").unwrap());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "jane",
            "@example.com",
            "jane@",
            "jane@example",
            "jane@@example.com",
            "ja ne@example.com",
            "jane@.example.com",
            "jane@example..com",
            "jane@example.com.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(300));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn ascii_mixed_case_still_folds() {
        for raw in [
            "NANCY.CLARK9@EXAMPLE.COM",
            "Nancy.Clark9@Example.Com",
            "nAnCy.ClArK9@eXaMpLe.CoM",
            "\t nancy.clark9@example.com\r\n",
        ] {
            assert_eq!(
                Email::parse(raw).unwrap().as_str(),
                "nancy.clark9@example.com",
                "{raw:?}"
            );
        }
        // Every printable ASCII character the parser allows survives, only A-Z change.
        let e = Email::parse("A+B_c-D.e!#$%&'*/=?^`{|}~@Ex-Ample.COM").unwrap();
        assert_eq!(e.as_str(), "a+b_c-d.e!#$%&'*/=?^`{|}~@ex-ample.com");
    }

    #[test]
    fn the_kelvin_sign_is_rejected_and_never_folds_to_k() {
        // U+212A KELVIN SIGN lower-cases to an ASCII `k` under Unicode rules: a deprovision of
        // this address once deleted nancy.clark9@example.com.
        assert_eq!("\u{212A}".to_lowercase(), "k");
        for raw in [
            "nancy.clar\u{212A}9@example.com",
            "NANCY.CLAR\u{212A}9@EXAMPLE.COM",
            "nancy.clark9@e\u{212A}ample.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} must be rejected");
        }
        // Other characters that Unicode folds onto ASCII are refused alike.
        for raw in [
            "\u{212B}ngstrom@example.com", // ANGSTROM SIGN -> å, not ASCII but still a fold
            "\u{130}nes@example.com",      // LATIN CAPITAL I WITH DOT ABOVE -> i + U+0307
            "\u{FF2E}ancy@example.com",    // FULLWIDTH N
            "nancy@example.\u{441}om",     // CYRILLIC SMALL ES, looks like c
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} must be rejected");
        }
    }

    #[test]
    fn zero_width_characters_are_rejected() {
        for c in ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}'] {
            for raw in [
                format!("nancy{c}.clark9@example.com"),
                format!("nancy.clark9@exa{c}mple.com"),
                format!("{c}nancy.clark9@example.com"),
                format!("nancy.clark9@example.com{c}"),
            ] {
                assert!(Email::parse(&raw).is_err(), "{raw:?} must be rejected");
            }
        }
    }

    #[test]
    fn bidi_controls_are_rejected() {
        let bidi = [
            '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
            '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ];
        for c in bidi {
            assert!(is_invisible(c), "{c:?}");
            for raw in [
                format!("nancy{c}.clark9@example.com"),
                format!("nancy.clark9@{c}example.com"),
                format!("{c}nancy.clark9@example.com"),
                format!("nancy.clark9@example.com{c}"),
            ] {
                let err = Email::parse(&raw).unwrap_err();
                // The message shows the character escaped, never the control itself.
                assert!(!err.to_string().contains(c), "{err}");
                assert!(err.to_string().contains("\\u{"), "{err}");
            }
        }
    }

    #[test]
    fn control_characters_are_rejected() {
        for c in ['\0', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}'] {
            for raw in [
                format!("nancy{c}.clark9@example.com"),
                format!("nancy.clark9@example{c}.com"),
            ] {
                let err = Email::parse(&raw).unwrap_err();
                assert!(!err.to_string().contains(c), "{err}");
            }
        }
        // White space inside the address, ASCII or not, is no better.
        for raw in [
            "nancy\t.clark9@example.com",
            "nancy.clark9@example\n.com",
            "nancy\u{A0}clark9@example.com",
            "\u{A0}nancy.clark9@example.com",
            "nancy.clark9@example.com\u{3000}",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} must be rejected");
        }
    }

    #[test]
    fn any_non_ascii_character_is_rejected() {
        // No IDN: internationalised local parts and domains are refused, not normalised.
        for raw in [
            "zo\u{eb}@example.com",
            "jos\u{e9}@example.com",
            "user@b\u{fc}cher.example",
            "user@xn--bcher-kva.example\u{301}",
            "\u{1F600}@example.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} must be rejected");
        }
        // The punycode form of an IDN domain is plain ASCII and stays accepted.
        assert_eq!(
            Email::parse("User@XN--Bcher-KVA.example").unwrap().as_str(),
            "user@xn--bcher-kva.example"
        );
    }

    #[test]
    fn is_invisible_covers_exactly_the_listed_characters() {
        let listed: Vec<char> = ('\u{200B}'..='\u{200F}')
            .chain('\u{202A}'..='\u{202E}')
            .chain(['\u{2060}'])
            .chain('\u{2066}'..='\u{2069}')
            .chain(['\u{FEFF}'])
            .collect();
        for c in '\0'..='\u{FFFF}' {
            assert_eq!(is_invisible(c), listed.contains(&c), "{:?}", c);
        }
    }
}
