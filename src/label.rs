//! Labels (`//TYPE/LAYER`) and label patterns (`//TYPE/...`, `//...`).
//! Pure parsing and printing; no I/O.

use std::fmt;

use serde::{Serialize, Serializer};

/// One layer: `//TYPE/LAYER`, e.g. `//compute/slurm`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    image_type: String,
    layer: String,
}

/// What a user may name on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `//...`: every layer.
    All,
    /// `//TYPE/...`: every layer of one image type.
    Type(String),
    /// `//TYPE/LAYER`.
    Exact(Label),
}

/// Is `s` usable as one path component of an image reference, the way
/// buildah and registries parse it (`[a-z0-9]+` runs joined by one `.`,
/// one or two `_`, or any number of `-`), letters of either case (image
/// names use the lower-case form)?
pub fn reference_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|&c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// The longest image type or layer name (the image name holding both and
/// the workspace's name is at most 255 characters).
pub const SEGMENT_MAX: usize = 64;

fn valid_segment(s: &str) -> bool {
    s.len() <= SEGMENT_MAX && reference_component(s)
}

const SEGMENT_RULE: &str = "each part starts and ends with a letter or digit, holds only letters, digits and the separators '.', '_', '__' or '-' (never two different ones in a row, nor '..'), and is at most 64 characters: it becomes part of an image name";

impl Label {
    /// Parses `//TYPE/LAYER`.
    pub fn parse(s: &str) -> Result<Label, String> {
        let Some(rest) = s.strip_prefix("//") else {
            return Err(if Label::from_key(s).is_ok() {
                format!("label '{s}' must start with '//': did you mean '//{s}'?")
            } else {
                format!("label '{s}' must look like //TYPE/LAYER, e.g. //compute/slurm")
            });
        };
        Label::from_key(rest).map_err(|e| e.replace(&format!("'{rest}'"), &format!("'{s}'")))
    }

    /// Parses the `TYPE/LAYER` key of a `[layers."TYPE/LAYER"]` table.
    pub fn from_key(key: &str) -> Result<Label, String> {
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            [t, l] if valid_segment(t) && valid_segment(l) => Ok(Label {
                image_type: (*t).to_string(),
                layer: (*l).to_string(),
            }),
            [_, _] => Err(format!("label '{key}' is malformed: {SEGMENT_RULE}")),
            _ => Err(format!(
                "label '{key}' must have exactly two parts, IMAGE_TYPE/LAYER (e.g. compute/slurm)"
            )),
        }
    }

    pub fn image_type(&self) -> &str {
        &self.image_type
    }

    pub fn layer(&self) -> &str {
        &self.layer
    }

    /// `TYPE-LAYER`: a form usable as an Ansible host name or file name.
    pub fn slug(&self) -> String {
        format!("{}-{}", self.image_type, self.layer)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "//{}/{}", self.image_type, self.layer)
    }
}

impl Serialize for Label {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, String> {
        if s == "//..." {
            return Ok(Pattern::All);
        }
        if let Some(t) = s.strip_prefix("//").and_then(|r| r.strip_suffix("/...")) {
            if valid_segment(t) {
                return Ok(Pattern::Type(t.to_string()));
            }
            return Err(format!("pattern '{s}' is malformed: {SEGMENT_RULE}"));
        }
        Label::parse(s).map(Pattern::Exact)
    }

    pub fn matches(&self, label: &Label) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Type(t) => label.image_type == *t,
            Pattern::Exact(l) => l == label,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::All => write!(f, "//..."),
            Pattern::Type(t) => write!(f, "//{t}/..."),
            Pattern::Exact(l) => write!(f, "{l}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_patterns() {
        let l = Label::parse("//compute/slurm").unwrap();
        assert_eq!(l.image_type(), "compute");
        assert_eq!(l.layer(), "slurm");
        assert_eq!(l.to_string(), "//compute/slurm");
        assert_eq!(Pattern::parse("//...").unwrap(), Pattern::All);
        assert_eq!(
            Pattern::parse("//compute/...").unwrap(),
            Pattern::Type("compute".into())
        );
        assert!(Pattern::parse("//compute/...").unwrap().matches(&l));
        assert!(!Pattern::parse("//uan/...").unwrap().matches(&l));
    }

    #[test]
    fn rejects_malformed_labels_with_a_hint() {
        assert!(
            Label::parse("compute/slurm")
                .unwrap_err()
                .contains("did you mean '//compute/slurm'")
        );
        assert!(Label::parse("//compute").is_err());
        assert!(Label::parse("//a/b/c").is_err());
        assert!(Label::parse("//a/b c").unwrap_err().contains("malformed"));
        assert!(Label::parse("//-a/b").is_err());
        assert!(Pattern::parse("//a b/...").is_err());
        assert!(Label::parse("").is_err());
    }

    #[test]
    fn labels_are_usable_in_image_names() {
        for ok in [
            "a/b",
            "a/b.c",
            "a/b_c",
            "a/b__c",
            "a/b---c",
            "A/Slurm-23.11",
            "0/9",
        ] {
            assert!(Label::from_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a/b-", "a/b.", "a/x_", "a/b..c", "a/b__-c", "a/b___c", "a/b._c", "a/-b", "a/_b",
        ] {
            let e = Label::from_key(bad).unwrap_err();
            assert!(e.contains("image name"), "{bad}: {e}");
        }
        let long = format!("a/{}", "x".repeat(SEGMENT_MAX + 1));
        assert!(Label::from_key(&long).is_err());
        assert!(Label::from_key(&format!("a/{}", "x".repeat(SEGMENT_MAX))).is_ok());
        assert!(Pattern::parse("//a-/...").is_err());
    }
}
