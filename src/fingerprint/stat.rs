//! What the stat cache ([`super::statcache`]) and the observation record
//! ([`super::observe`]) share, so that neither depends on the other: a
//! file's [`Stat`] data, the clock they compare it with ([`now_ns`]), git's
//! racy rule ([`is_racy`]) and the LEB128 integers of their encodings.
//!
//! The racy rule: a file whose mtime (or ctime) is not older than the start
//! of the scan that looked at it may have been changed again within the
//! same clock tick without its stat data changing, so what was learnt of it
//! cannot be trusted later. "The start" is moved back by a margin
//! ([`racy_margin_ns`]): file timestamps come from the kernel's coarse
//! clock (a jiffy behind the clock we read) or, on some file systems, are
//! rounded down (FAT: 2 s), so a write after the scan started can carry a
//! timestamp slightly before it. Re-hashing files edited in the last two
//! seconds costs little; a stale hash would ship a wrong image.
//!
//! I/O: reads the clock and, once, one environment variable; nothing else.

use std::sync::OnceLock;

/// The racy margin when [`MARGIN_VAR`] does not set another.
const DEFAULT_MARGIN_MS: u64 = 2000;

/// A test setting, not for users: the racy margin in milliseconds, so that
/// tests of the stat cache and the memo need not wait two seconds for the
/// files they just wrote to count as old. Read once per process; a value
/// that is not a whole number of milliseconds means the default.
pub const MARGIN_VAR: &str = "LAYERBUILD_RACY_MARGIN_MS";

/// How far before the scan's start a timestamp still counts as racy (2 s
/// unless [`MARGIN_VAR`] says otherwise).
pub fn racy_margin_ns() -> i64 {
    static MARGIN: OnceLock<i64> = OnceLock::new();
    *MARGIN.get_or_init(|| {
        let ms = std::env::var(MARGIN_VAR)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_MARGIN_MS);
        i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
    })
}

/// The margin as said to users: "2 s" (the default), else in milliseconds.
pub fn racy_margin_text() -> String {
    let ns = racy_margin_ns();
    if ns % 1_000_000_000 == 0 {
        format!("{} s", ns / 1_000_000_000)
    } else {
        format!("{} ms", ns / 1_000_000)
    }
}

/// Git's racy rule: may a file with these times have changed again,
/// unseen, after a scan started at `started_ns` looked at it?
#[inline]
pub fn is_racy(mtime_ns: i64, ctime_ns: i64, started_ns: i64) -> bool {
    let racy_from = started_ns.saturating_sub(racy_margin_ns());
    mtime_ns >= racy_from || ctime_ns >= racy_from
}

/// The stat fields of a file now, to compare with what was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub device: u64,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
}

impl Stat {
    #[cfg(unix)]
    pub fn of(meta: &std::fs::Metadata) -> Option<Stat> {
        use std::os::unix::fs::MetadataExt;
        Some(Stat {
            size: meta.size(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
            ctime_ns: meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec(),
            inode: meta.ino(),
            device: meta.dev(),
            mode: meta.mode(),
        })
    }

    /// Without inode and ctime there is nothing trustworthy to compare.
    #[cfg(not(unix))]
    pub fn of(_meta: &std::fs::Metadata) -> Option<Stat> {
        None
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

/// `n` as LEB128 (the stat cache's and the observation record's encodings).
pub(super) fn varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// [`varint`] reversed, from the front of `rest`; at most five bytes.
pub(super) fn read_varint(rest: &mut &[u8]) -> Option<usize> {
    let mut n = 0usize;
    for shift in (0..35).step_by(7) {
        let (&b, r) = rest.split_first()?;
        *rest = r;
        n |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for n in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as usize >> 4] {
            let mut out = vec![];
            varint(&mut out, n);
            let mut rest = &out[..];
            assert_eq!(read_varint(&mut rest), Some(n));
            assert!(rest.is_empty());
        }
        assert_eq!(read_varint(&mut &[0x80u8, 0x80][..]), None);
    }

    #[test]
    fn the_margin_is_two_seconds_unless_a_test_sets_it() {
        // Unit tests run without the variable.
        if std::env::var_os(MARGIN_VAR).is_none() {
            assert_eq!(racy_margin_ns(), 2_000_000_000);
            assert_eq!(racy_margin_text(), "2 s");
        }
        let m = racy_margin_ns();
        assert!(is_racy(1_000, 0, 1_000 + m));
        assert!(is_racy(0, 1_000, 1_000 + m));
        assert!(!is_racy(1_000, 1_000, 1_001 + m));
    }
}
