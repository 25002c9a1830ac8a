//! The stat cache: a file's stat data → its content hash, so an unchanged
//! file is not read again (git's index, Bazel's file digest cache).
//!
//! An entry is trusted only when size, mtime, ctime, inode, device and the
//! full mode all match the file now, and the file was not *racy* when the
//! entry was recorded (git's rule, [`super::stat::is_racy`]): "recorded" is
//! the start of the scan that hashed it.
//!
//! Pure data: loading and storing the entries is the cache module's job
//! ([`crate::cache::fingerprint_db`], through [`super::session`]); this module never opens SQLite.

use std::collections::HashMap;

use super::stat::{is_racy, read_varint, varint};
// Also reached by this path from the cache module.
pub use super::stat::{Stat, now_ns};

/// What a file's stat said when its content was hashed, and the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatEntry {
    pub stat: Stat,
    /// blake3 of the content.
    pub hash: [u8; 32],
    /// The content holds a Jinja marker (see [`super::files::FileHash::jinja`]).
    pub jinja: bool,
    /// Start of the scan that hashed the file (ns since the epoch).
    pub recorded_ns: i64,
}

impl Stat {
    /// The entry recording that a file with this stat hashed to `hash`.
    pub fn entry(self, hash: [u8; 32], jinja: bool, recorded_ns: i64) -> StatEntry {
        StatEntry {
            stat: self,
            hash,
            jinja,
            recorded_ns,
        }
    }
}

impl StatEntry {
    /// May this entry stand for a file whose stat is `now`?
    pub fn trusted_for(&self, now: &Stat) -> bool {
        let s = &self.stat;
        self.stat == *now && !is_racy(s.mtime_ns, s.ctime_ns, self.recorded_ns)
    }
}

/// Entries loaded before a scan, and what the scan learnt.
#[derive(Debug, Default)]
pub struct StatCache {
    /// Workspace-relative path → entry, as loaded.
    pub entries: HashMap<String, StatEntry>,
    /// How many entries to write back: files hashed by content in this
    /// scan (the entries themselves are the file index's:
    /// [`super::files::FileIndex::stat_updates`]).
    pub new: usize,
    /// Loaded entries whose file no longer exists.
    pub removed: Vec<String>,
    /// Files hashed by reading their content in this scan.
    pub hashed: usize,
    /// Files whose hash came from a trusted entry.
    pub reused: usize,
}

impl StatCache {
    pub fn new(entries: HashMap<String, StatEntry>) -> StatCache {
        StatCache {
            entries,
            ..Default::default()
        }
    }

    /// Is there anything to write back?
    pub fn dirty(&self) -> bool {
        self.new > 0 || !self.removed.is_empty()
    }
}

/// What an encoded stat cache starts with (its format).
const ENCODING: &[u8] = b"layerbuild stat cache 1\n";
/// The fixed part of an encoded entry.
const FIXED: usize = 8 * 6 + 4 + 32 + 1;

/// The entries as one byte string, by path: each path as the bytes it
/// shares with the previous one (LEB128) and the rest (length, bytes),
/// then the entry's fields. One write and one read of a few megabytes
/// instead of a row per file: a tenth of the time for 50,000 files.
pub fn encode<'a>(entries: impl IntoIterator<Item = (&'a str, &'a StatEntry)>) -> Vec<u8> {
    let mut sorted: Vec<(&str, &StatEntry)> = entries.into_iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(ENCODING.len() + sorted.len() * (FIXED + 24));
    encode_to(sorted.into_iter().map(|(p, e)| (p, e.clone())), &mut |b| {
        out.extend_from_slice(b);
        Ok(())
    })
    .expect("writing to memory never fails");
    out
}

/// [`encode`] of entries already sorted by path, each path once, handed
/// to `sink` a piece of about 64 KiB at a time: the encoding is never held
/// whole (a large workspace's is megabytes).
pub fn encode_to<'a>(
    sorted: impl Iterator<Item = (&'a str, StatEntry)>,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    const PIECE: usize = 64 * 1024;
    let mut out = Vec::with_capacity(PIECE + 4096);
    out.extend_from_slice(ENCODING);
    let mut prev: &[u8] = &[];
    for (path, e) in sorted {
        let path = path.as_bytes();
        debug_assert!(prev < path, "stat entries out of order");
        let shared = prev.iter().zip(path).take_while(|(a, b)| a == b).count();
        varint(&mut out, shared);
        varint(&mut out, path.len() - shared);
        out.extend_from_slice(&path[shared..]);
        out.extend_from_slice(&e.stat.size.to_le_bytes());
        out.extend_from_slice(&e.stat.mtime_ns.to_le_bytes());
        out.extend_from_slice(&e.stat.ctime_ns.to_le_bytes());
        out.extend_from_slice(&e.stat.inode.to_le_bytes());
        out.extend_from_slice(&e.stat.device.to_le_bytes());
        out.extend_from_slice(&e.stat.mode.to_le_bytes());
        out.extend_from_slice(&e.hash);
        out.push(u8::from(e.jinja));
        out.extend_from_slice(&e.recorded_ns.to_le_bytes());
        prev = path;
        if out.len() >= PIECE {
            sink(&out)?;
            out.clear();
        }
    }
    sink(&out)
}

/// [`encode`] reversed; `None` for anything malformed (or in another
/// format): the cache is then empty.
pub fn decode(bytes: &[u8]) -> Option<HashMap<String, StatEntry>> {
    let mut rest = bytes.strip_prefix(ENCODING)?;
    let mut out = HashMap::new();
    let mut path: Vec<u8> = vec![];
    while !rest.is_empty() {
        let shared = read_varint(&mut rest)?;
        let len = read_varint(&mut rest)?;
        if shared > path.len() || rest.len() < len + FIXED {
            return None;
        }
        path.truncate(shared);
        path.extend_from_slice(&rest[..len]);
        let f = &rest[len..len + FIXED];
        rest = &rest[len + FIXED..];
        let u64_at = |i: usize| u64::from_le_bytes(f[i..i + 8].try_into().unwrap_or_default());
        let entry = StatEntry {
            stat: Stat {
                size: u64_at(0),
                mtime_ns: u64_at(8) as i64,
                ctime_ns: u64_at(16) as i64,
                inode: u64_at(24),
                device: u64_at(32),
                mode: u32::from_le_bytes(f[40..44].try_into().ok()?),
            },
            hash: f[44..76].try_into().ok()?,
            jinja: match f[76] {
                0 => false,
                1 => true,
                _ => return None,
            },
            recorded_ns: u64_at(77) as i64,
        };
        out.insert(String::from_utf8(path.clone()).ok()?, entry);
    }
    Some(out)
}

/// A scan's new entries, sorted by path, as often as asked (the store
/// encodes them twice rather than hold them).
pub type NewEntries<'a> =
    dyn Fn() -> Box<dyn Iterator<Item = (&'a str, StatEntry)> + 'a> + Sync + 'a;

/// The entries loaded, less those of `removed` files, sorted by path (for
/// [`merged`]).
pub fn kept<'a>(
    loaded: &'a HashMap<String, StatEntry>,
    removed: &[String],
) -> Vec<(&'a str, &'a StatEntry)> {
    let removed: std::collections::HashSet<&str> = removed.iter().map(String::as_str).collect();
    let mut old: Vec<(&str, &StatEntry)> = loaded
        .iter()
        .map(|(p, e)| (p.as_str(), e))
        .filter(|(p, _)| !removed.contains(p))
        .collect();
    old.sort_unstable_by(|a, b| a.0.cmp(b.0));
    old
}

/// The `kept` entries and a scan's `new` ones (sorted by path; they
/// replace kept entries of the same path), sorted by path for
/// [`encode_to`]. The new ones are taken as they come: they are never all
/// held as a list of their own.
pub fn merged<'a>(
    kept: &[(&'a str, &'a StatEntry)],
    new: impl Iterator<Item = (&'a str, StatEntry)>,
) -> impl Iterator<Item = (&'a str, StatEntry)> {
    let mut old = kept.iter().copied().peekable();
    let mut new = new.peekable();
    std::iter::from_fn(move || match (old.peek(), new.peek()) {
        (Some(o), Some(n)) if o.0 < n.0 => old.next().map(|(p, e)| (p, e.clone())),
        (Some(o), Some(n)) if o.0 == n.0 => {
            old.next();
            new.next()
        }
        (_, Some(_)) => new.next(),
        (Some(_), None) => old.next().map(|(p, e)| (p, e.clone())),
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::stat::racy_margin_ns;

    fn stat() -> Stat {
        Stat {
            size: 10,
            mtime_ns: 1_000_000_000_000,
            ctime_ns: 1_000_000_000_000,
            inode: 7,
            device: 1,
            mode: 0o100644,
        }
    }

    #[test]
    fn new_entries_replace_loaded_ones_removed_ones_go_and_pieces_join_up() {
        let old = stat().entry([1; 32], false, 5);
        let new = Stat { size: 11, ..stat() }.entry([2; 32], true, 6);
        let loaded: HashMap<String, StatEntry> = ["a", "b", "c", "e"]
            .iter()
            .map(|p| (p.to_string(), old.clone()))
            .collect();
        let removed = vec!["b".to_string()];
        let kept = kept(&loaded, &removed);
        let fresh = [("a", new.clone()), ("d", new.clone()), ("f", new.clone())];
        let all: Vec<(&str, StatEntry)> = merged(&kept, fresh.iter().cloned()).collect();
        let want: Vec<(&str, StatEntry)> = vec![
            ("a", new.clone()),
            ("c", old.clone()),
            ("d", new.clone()),
            ("e", old.clone()),
            ("f", new.clone()),
        ];
        assert_eq!(all, want);
        // Streamed in pieces (thousands of entries: several pieces), the
        // bytes are the whole encoding's.
        let many: Vec<(String, StatEntry)> = (0..5000)
            .map(|i| (format!("roles/r{i:05}/templates/t.j2"), new.clone()))
            .collect();
        let whole = encode(many.iter().map(|(p, e)| (p.as_str(), e)));
        let mut pieces = 0;
        let mut joined = vec![];
        encode_to(
            many.iter().map(|(p, e)| (p.as_str(), e.clone())),
            &mut |b| {
                pieces += 1;
                joined.extend_from_slice(b);
                Ok(())
            },
        )
        .unwrap();
        assert!(pieces > 2, "{pieces}");
        assert_eq!(joined, whole);
        assert_eq!(decode(&joined).unwrap().len(), 5000);
    }

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let e = stat().entry([7; 32], true, 42);
        let f = Stat { inode: 9, ..stat() }.entry([1; 32], false, -1);
        let long = format!("roles/{}/x", "d".repeat(300));
        let bytes = encode([
            ("roles/a/tasks/main.yml", &e),
            ("roles/a/tasks/other.yml", &f),
            (long.as_str(), &e),
            ("é.txt", &f),
        ]);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back["roles/a/tasks/main.yml"], e);
        assert_eq!(back["roles/a/tasks/other.yml"], f);
        assert_eq!(back[&long], e);
        assert_eq!(back["é.txt"], f);
        assert_eq!(decode(&encode([])).unwrap().len(), 0);
        for cut in [1, 10, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_none(), "{cut}");
        }
        assert!(decode(b"").is_none());
    }

    #[test]
    fn an_old_unchanged_file_is_trusted() {
        let s = stat();
        let e = s.entry([0; 32], false, s.mtime_ns + 60_000_000_000);
        assert!(e.trusted_for(&s));
    }

    #[test]
    fn any_stat_change_is_a_miss() {
        let s = stat();
        let e = s.entry([0; 32], false, s.mtime_ns + 60_000_000_000);
        for changed in [
            Stat { size: 11, ..s },
            Stat {
                mtime_ns: s.mtime_ns - 1,
                ..s
            },
            Stat {
                ctime_ns: s.ctime_ns + 1,
                ..s
            },
            Stat { inode: 8, ..s },
            Stat { device: 2, ..s },
            Stat {
                mode: 0o100755,
                ..s
            },
        ] {
            assert!(!e.trusted_for(&changed), "{changed:?}");
        }
    }

    #[test]
    fn a_file_modified_in_the_tick_of_the_scan_is_racy() {
        let s = stat();
        // Recorded in the same second, a second later, and just inside the margin.
        for recorded in [
            s.mtime_ns,
            s.mtime_ns + 1,
            s.mtime_ns + 1_000_000_000,
            s.mtime_ns + racy_margin_ns(),
        ] {
            assert!(!s.entry([0; 32], false, recorded).trusted_for(&s));
        }
        assert!(
            s.entry([0; 32], false, s.mtime_ns + racy_margin_ns() + 1)
                .trusted_for(&s)
        );
        // A recent ctime (mtime set back with `touch -d`) is racy too.
        let back = Stat {
            mtime_ns: 0,
            ctime_ns: s.ctime_ns,
            ..s
        };
        assert!(!back.entry([0; 32], false, s.ctime_ns).trusted_for(&back));
    }
}
