//! [`Digest`]: a layer's content digest (blake3, 64 lower-case hex) as it
//! is stored, compared and shown. A leaf module: it depends on nothing else
//! in the crate, and does no I/O.
//!
//! A digest read back from the cache database or typed by a user may be
//! anything (an edited row, a prefix): a `Digest` holds whatever text it was
//! given, and [`Digest::short`] never panics on it. [`Digest::is_full`]
//! says whether it is a well-formed full digest.

use std::borrow::Borrow;
use std::fmt;

/// Characters of a digest (or image id) shown to people.
pub const SHORT_LEN: usize = 12;

/// Characters of a full blake3 digest in hex.
pub const FULL_LEN: usize = 64;

/// A layer's digest. Serialises as the bare string (`serde(transparent)`),
/// so JSON output and stored rows read the same as with a `String`.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    /// The digest of `hash` (lower-case hex).
    pub fn of_hash(hash: &blake3::Hash) -> Digest {
        Digest(hash.to_hex().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The first [`SHORT_LEN`] characters, as shown to people (the whole
    /// text when shorter).
    pub fn short(&self) -> &str {
        short(&self.0)
    }

    /// Is this a full digest: [`FULL_LEN`] lower-case hex digits?
    pub fn is_full(&self) -> bool {
        self.0.len() == FULL_LEN
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

/// The first [`SHORT_LEN`] characters of a digest or image id (the whole
/// string when shorter; never a panic, whatever a database row holds).
pub fn short(digest: &str) -> &str {
    digest
        .char_indices()
        .nth(SHORT_LEN)
        .map_or(digest, |(i, _)| &digest[..i])
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Digest {
    fn from(s: String) -> Digest {
        Digest(s)
    }
}

impl From<&str> for Digest {
    fn from(s: &str) -> Digest {
        Digest(s.to_string())
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by `Digest` can be looked up with a `&str` (`Hash` and `Eq`
/// are those of the string).
impl Borrow<str> for Digest {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_is_twelve_characters_or_the_whole_text() {
        let full = Digest::of_hash(&blake3::hash(b"layer"));
        assert!(full.is_full());
        assert_eq!(full.short(), &full.as_str()[..12]);
        for odd in ["", "abc", "0123456789ab", "ééééééééééééé", "x"] {
            let d = Digest::from(odd);
            assert!(!d.is_full());
            let want: String = odd.chars().take(12).collect();
            assert_eq!(d.short(), want, "{odd:?}");
        }
    }

    /// The same text as `fingerprint::short`, which it is meant to replace.
    #[test]
    fn short_agrees_with_fingerprint_short() {
        for s in ["", "abc", &"f".repeat(64), "ééééééééééééé", "0123456789abc"] {
            assert_eq!(Digest::from(s).short(), crate::fingerprint::short(s));
        }
    }

    #[test]
    fn is_full_wants_64_lower_case_hex_digits() {
        assert!(Digest::from("0".repeat(64)).is_full());
        assert!(!Digest::from("A".repeat(64)).is_full());
        assert!(!Digest::from("0".repeat(63)).is_full());
        assert!(!Digest::from("g".repeat(64)).is_full());
    }

    #[test]
    fn serialises_and_displays_as_the_bare_string() {
        let d = Digest::from("ab".repeat(32));
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert_eq!(d.to_string(), "ab".repeat(32));
    }

    #[test]
    fn a_map_keyed_by_digest_is_looked_up_by_str() {
        let mut m = std::collections::HashMap::new();
        m.insert(Digest::from("abc"), 1);
        assert_eq!(m.get("abc"), Some(&1));
        let d = Digest::from("abc");
        assert!(d == "abc" && d == *"abc");
    }
}
