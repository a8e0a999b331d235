//! A string that must never reach a log line, an error message or `Debug` output.

use std::{borrow::Cow, fmt};

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret prints instead of itself.
pub const REDACTED: &str = "[redacted]";

/// Shortest secret cut out of text: shorter values would shred ordinary words.
pub const MIN_REDACTED_CHARS: usize = 4;

/// `text` with every one of `secrets` replaced by [`REDACTED`]: as given, as
/// it reads once control characters are stripped and the ends trimmed
/// (BigID's messages are cleaned that way before they get here), and any
/// start of one left just before a `…` where a message was cut short.
pub fn redact_secrets(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        let raw = secret.expose();
        if raw.chars().count() < MIN_REDACTED_CHARS {
            continue;
        }
        let cleaned: String = raw.chars().filter(|c| !c.is_control()).collect();
        // A message is trimmed too: a secret at its very start or end loses
        // its outer whitespace (Unicode line separators included).
        let trimmed = cleaned.trim();
        for form in [raw, cleaned.as_str(), trimmed] {
            if !form.is_empty() {
                out = out.replace(form, REDACTED);
            }
        }
        out = redact_prefix_at_cuts(&out, &cleaned);
        out = redact_prefix_at_cuts(&out, cleaned.trim_start());
    }
    out
}

/// Replaces the longest start of `secret` that ends right before a `…`.
fn redact_prefix_at_cuts(text: &str, secret: &str) -> String {
    if secret.is_empty() || !text.contains('…') {
        return text.to_owned();
    }
    let pieces: Vec<&str> = text.split('…').collect();
    let mut out = String::with_capacity(text.len());
    for (i, piece) in pieces.iter().enumerate() {
        let mut piece = *piece;
        let mut cut = false;
        if i + 1 < pieces.len() {
            // Longest first, so the whole leftover goes.
            let ends: Vec<usize> = secret
                .char_indices()
                .map(|(at, c)| at + c.len_utf8())
                .collect();
            if let Some(end) = ends
                .iter()
                .rev()
                .find(|&&end| piece.ends_with(&secret[..end]))
            {
                piece = &piece[..piece.len() - end];
                cut = true;
            }
        }
        out.push_str(piece);
        if cut {
            out.push_str(REDACTED);
        }
        if i + 1 < pieces.len() {
            out.push('…');
        }
    }
    out
}

/// A password or token. `Debug` and `Display` print `[redacted]`; only
/// [`Secret::expose`] and serialization (a result sent to the MCP client that
/// asked for it) reveal the value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a value that must not be printed.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into_boxed_str())
    }

    /// The value itself, for the one place that has to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for the empty string, which callers treat as "not given".
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// Serializing reveals the value: it is how a token reaches the client that
/// requested it. Nothing that is logged derives `Serialize` over a `Secret`.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        String::schema_name()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        String::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(format!("{secret}"), REDACTED);
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn round_trips_through_json_as_a_plain_string() {
        let secret: Secret = serde_json::from_str("\"tok\"").unwrap();
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"tok\"");
    }
}
