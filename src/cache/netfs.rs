//! Refuses a cache directory on a network file system, where SQLite's
//! locking (and our `flock` per digest) is unreliable: NFS and SMB clients
//! may grant a lock on two machines at once, Lustre without `-o flock`
//! fails or keeps locks node-local, and the WAL's shared memory file is
//! not shared between hosts at all. Two builds then corrupt the database.
//!
//! The file system is found from `/proc/self/mountinfo` (no libc `statfs`):
//! the mount with the longest mount point containing the resolved cache
//! directory (symlinks followed, so `cache -> /local/disk` is judged by the
//! local disk). `LAYERBUILD_ALLOW_NETWORK_CACHE=1` skips the check for a
//! file system whose locking is known to work for one host at a time.
//!
//! I/O: reads `/proc/self/mountinfo` and resolves the cache path.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The environment variable that turns the check off.
pub const ALLOW_VAR: &str = "LAYERBUILD_ALLOW_NETWORK_CACHE";

/// File system types whose locks cannot be trusted across hosts (fuse
/// subtypes as mountinfo prints them, `fuse.sshfs`).
const NETWORK_TYPES: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "9p",
    "afs",
    "ncpfs",
    "lustre",
    "beegfs",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.sshfs",
    "fuse.s3fs",
    "fuse.rclone",
];

/// A mount as `/proc/self/mountinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Parses mountinfo lines (`ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTS [TAGS...] - TYPE SOURCE SUPER_OPTS`).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next().unwrap_or("");
            Some(Mount {
                mount_point: PathBuf::from(unescape(mount_point)),
                fstype: fstype.to_string(),
                source: unescape(source),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path` (absolute, resolved): the last-listed mount
/// among those with the longest mount point that is a prefix of it.
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point)
            && best.is_none_or(|b| {
                m.mount_point.components().count() >= b.mount_point.components().count()
            })
        {
            best = Some(m);
        }
    }
    best
}

/// Is this file system type one whose locking we refuse?
pub fn is_network(fstype: &str) -> bool {
    NETWORK_TYPES.contains(&fstype)
}

/// Errors when `dir` (which exists) is on a network file system, unless
/// [`ALLOW_VAR`] is set. Unreadable mount information passes.
pub fn check(dir: &Path) -> Result<()> {
    if std::env::var_os(ALLOW_VAR).is_some_and(|v| !v.is_empty() && v != "0") {
        return Ok(());
    }
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Ok(());
    };
    let Ok(resolved) = dir.canonicalize() else {
        return Ok(());
    };
    let mounts = parse_mountinfo(&text);
    match mount_of(&mounts, &resolved) {
        Some(m) if is_network(&m.fstype) => Err(refusal(dir, m)),
        _ => Ok(()),
    }
}

fn refusal(dir: &Path, m: &Mount) -> Error {
    Error::env(format!(
        "the cache directory {} is on a network file system ({} from {} at {}): SQLite and build locks are unreliable there, so parallel builds could corrupt the cache",
        dir.display(),
        m.fstype,
        m.source,
        m.mount_point.display()
    ))
    .with_hint(format!(
        "keep the cache on a local disk: make it a symlink, e.g. `mkdir -p /var/tmp/layerbuild && ln -s /var/tmp/layerbuild {}` (or point [workspace] cache at such a link); set {ALLOW_VAR}=1 if only one host ever uses this cache and its locking works",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
25 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
40 22 0:35 / /home rw,relatime shared:20 - nfs4 fs1:/export/home rw,vers=4.2,sec=sys
41 40 8:2 / /home/alice/local\\040disk rw,relatime shared:21 - xfs /dev/sda2 rw
42 22 0:36 / /lus rw,relatime shared:22 - lustre 10.0.0.1@o2ib:/lus rw,flock
43 22 0:37 / /mnt/smb rw,relatime shared:23 - cifs //srv/share rw,vers=3.0
44 22 0:38 / /scratch rw,relatime - fuse.sshfs alice@login:/scratch rw,user_id=0
";

    fn fstype(path: &str) -> String {
        let mounts = parse_mountinfo(MOUNTINFO);
        mount_of(&mounts, Path::new(path))
            .map(|m| m.fstype.clone())
            .unwrap_or_default()
    }

    #[test]
    fn finds_the_file_system_of_the_longest_mount_point() {
        assert_eq!(fstype("/var/cache/layerbuild"), "ext4");
        assert_eq!(fstype("/home/alice/ws/cache"), "nfs4");
        assert_eq!(fstype("/home/alice/local disk/ws/cache"), "xfs");
        // A prefix of the name is not a parent directory.
        assert_eq!(fstype("/homework/cache"), "ext4");
        assert_eq!(fstype("/lus/proj/cache"), "lustre");
        assert_eq!(fstype("/mnt/smb/cache"), "cifs");
        assert_eq!(fstype("/scratch/ws/cache"), "fuse.sshfs");
    }

    #[test]
    fn network_file_systems_are_refused_with_the_mount_named() {
        let mounts = parse_mountinfo(MOUNTINFO);
        for (path, refused) in [
            ("/home/alice/ws/cache", true),
            ("/home/alice/local disk/c", false),
            ("/lus/c", true),
            ("/mnt/smb/c", true),
            ("/scratch/c", true),
            ("/var/c", false),
        ] {
            let m = mount_of(&mounts, Path::new(path)).unwrap();
            assert_eq!(is_network(&m.fstype), refused, "{path}");
        }
        let m = mount_of(&mounts, Path::new("/home/alice/ws/cache")).unwrap();
        let e = refusal(Path::new("/home/alice/ws/cache"), m).to_string();
        assert!(e.contains("nfs4 from fs1:/export/home at /home"), "{e}");
        assert!(e.contains(ALLOW_VAR), "{e}");
        assert_eq!(e.lines().count(), 2, "{e}");
    }

    #[test]
    fn this_machines_temporary_directory_is_found_and_passes() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounts = parse_mountinfo(&text);
        assert!(mount_of(&mounts, &dir.path().canonicalize().unwrap()).is_some());
        check(dir.path()).unwrap();
    }
}
