//! The netboot export's contents, apart from the squashfs: which kernel
//! and initramfs of an image's `/boot` to take, `boot.json` and the iPXE
//! script. The choice and the texts are pure; [`write_boot_files`] copies
//! and hashes the files.
//!
//! I/O: reads the mounted image's `/boot`, writes into the export's
//! temporary directory. Starts no process (the squashfs is the caller's).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::digest::Digest;

/// The kernel's file name in the export.
pub const KERNEL: &str = "vmlinuz";
/// The initramfs's file name in the export.
pub const INITRD: &str = "initramfs.img";
/// The image's root file system in the export.
pub const ROOTFS: &str = "rootfs.squashfs";
pub const BOOT_JSON: &str = "boot.json";
pub const IPXE: &str = "boot.ipxe";
/// Schema version of `boot.json`.
pub const BOOT_JSON_VERSION: u32 = 1;

/// What a netboot export needs beyond the image: whose it is, and how it boots.
#[derive(Debug, Clone)]
pub struct NetbootRequest {
    pub label: String,
    pub digest: Digest,
    /// The kernel version the Layerfile names.
    pub kernel: Option<String>,
    /// The layer's own kernel arguments.
    pub cmdline: String,
}

/// The kernel and initramfs chosen from `/boot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub version: String,
    /// File names in `/boot`.
    pub kernel: String,
    pub initrd: String,
}

/// The initramfs names of kernel `v`, in the order they are looked for:
/// Debian's and Ubuntu's, Fedora's and RHEL's (dracut), SUSE's.
fn initrd_names(v: &str) -> [String; 3] {
    [
        format!("initrd.img-{v}"),
        format!("initramfs-{v}.img"),
        format!("initrd-{v}"),
    ]
}

/// Chooses the kernel and initramfs from the regular files of an image's
/// `/boot`: the one `wanted` names, else the newest version having both.
/// The error says what is missing (`label` is the layer).
pub fn choose(names: &[String], wanted: Option<&str>, label: &str) -> Result<BootFiles, String> {
    let mut versions: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-"))
        .filter(|v| !v.is_empty())
        .collect();
    if versions.is_empty() {
        return Err(format!(
            "{label} has no kernel: its /boot holds no vmlinuz-VERSION (install one, e.g. linux-image-amd64, with an initramfs generator such as dracut and dracut-live)"
        ));
    }
    versions.sort_by(|a, b| version_cmp(a, b));
    let initrd_of = |v: &str| {
        initrd_names(v)
            .into_iter()
            .find(|n| names.iter().any(|x| x == n))
    };
    if let Some(w) = wanted {
        if !versions.contains(&w) {
            return Err(format!(
                "{label} names kernel {w}, which its /boot does not hold (it has {})",
                versions.join(", ")
            ));
        }
        return match initrd_of(w) {
            Some(initrd) => Ok(BootFiles {
                version: w.to_string(),
                kernel: format!("vmlinuz-{w}"),
                initrd,
            }),
            None => Err(missing_initrd(label, &[w])),
        };
    }
    for v in versions.iter().rev() {
        if let Some(initrd) = initrd_of(v) {
            return Ok(BootFiles {
                version: v.to_string(),
                kernel: format!("vmlinuz-{v}"),
                initrd,
            });
        }
    }
    Err(missing_initrd(label, &versions))
}

fn missing_initrd(label: &str, versions: &[&str]) -> String {
    let v = versions.last().copied().unwrap_or("");
    format!(
        "{label} has no initramfs for its kernel {}: its /boot holds none of {} (install an initramfs generator, e.g. dracut and dracut-live, before the kernel, or run it: dracut --kver {v})",
        versions.join(", "),
        initrd_names(v).join(", ")
    )
}

/// Orders version strings as people do: runs of digits by value.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, &str)> {
        let mut out = vec![];
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (xs, ys) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xs.len().cmp(&ys.len()).then_with(|| xs.cmp(ys))
            }
            _ => x.1.cmp(y.1),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// The kernel arguments a boot from the squashfs as a block device
/// takes besides `root=DEVICE rootfstype=squashfs`: the root read-only
/// under a tmpfs overlay (dracut's overlay-root module), then the layer's
/// own.
pub fn cmdline(own: &str) -> String {
    with_own("ro rootovl", own)
}

fn with_own(base: &str, own: &str) -> String {
    match own.trim() {
        "" => base.to_string(),
        own => format!("{base} {own}"),
    }
}

/// One file of the export in `boot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub sha256: String,
    pub bytes: u64,
    /// Where it came from in the image (`/boot/...`), or `/` for the root.
    pub source: String,
}

/// `boot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootJson {
    pub version: u32,
    pub label: String,
    /// The layer's digest.
    pub digest: Digest,
    pub kernel_version: String,
    /// Kernel arguments of a boot with rootfs.squashfs as a block device,
    /// besides `root=DEVICE rootfstype=squashfs` ([`cmdline`]).
    pub cmdline: String,
    /// The layer's own kernel arguments (in `cmdline` too).
    pub own_cmdline: String,
    pub files: BTreeMap<String, FileEntry>,
}

/// The iPXE script: boots the files beside it, the root fetched over
/// HTTP from `${root-url}`, by default beside the script, by dracut's
/// dmsquash-live and livenet modules (which the initramfs must hold).
pub fn ipxe_script(b: &BootJson) -> String {
    format!(
        "#!ipxe\n\
         # {label} at {digest}, kernel {kv} (written by layerbuild)\n\
         # Serve this directory over HTTP and chain this script; rootfs.squashfs is\n\
         # fetched by the initramfs (dracut dmsquash-live and livenet) from ${{root-url}}.\n\
         isset ${{root-url}} || set root-url ${{cwduri}}{ROOTFS}\n\
         kernel {KERNEL} initrd={INITRD} root=live:${{root-url}} {cmdline}\n\
         initrd {INITRD}\n\
         boot\n",
        label = b.label,
        digest = b.digest,
        kv = b.kernel_version,
        cmdline = with_own(
            "ro rd.live.image rd.live.overlay.overlayfs=1",
            &b.own_cmdline
        ),
    )
}

/// sha256 of a file, in hex, and its size.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, n))
}

/// The regular files of `boot` (symlinks left out: they may point
/// outside the image, and the versioned files are what is chosen).
fn boot_names(boot: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(boot) else {
        return vec![];
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Chooses the kernel and initramfs in the mounted image `root` (before
/// anything is written, so a missing kernel fails fast).
pub fn choose_in(root: &Path, req: &NetbootRequest) -> Result<BootFiles, String> {
    choose(
        &boot_names(&root.join("boot")),
        req.kernel.as_deref(),
        &req.label,
    )
}

/// Copies the chosen kernel and initramfs from `root` into `dir`, which
/// already holds the squashfs, and writes `boot.json` and the iPXE script.
pub fn write_boot_files(
    root: &Path,
    dir: &Path,
    files: &BootFiles,
    req: &NetbootRequest,
) -> Result<BootJson, String> {
    let copy = |from: &str, to: &str| {
        std::fs::copy(root.join("boot").join(from), dir.join(to))
            .map_err(|e| format!("cannot copy /boot/{from} of the image: {e}"))
    };
    copy(&files.kernel, KERNEL)?;
    copy(&files.initrd, INITRD)?;
    let mut entries = BTreeMap::new();
    for (name, source) in [
        (KERNEL, format!("/boot/{}", files.kernel)),
        (INITRD, format!("/boot/{}", files.initrd)),
        (ROOTFS, "/".to_string()),
    ] {
        let (sha256, bytes) =
            sha256_file(&dir.join(name)).map_err(|e| format!("cannot read {name}: {e}"))?;
        entries.insert(
            name.to_string(),
            FileEntry {
                sha256,
                bytes,
                source,
            },
        );
    }
    let json = BootJson {
        version: BOOT_JSON_VERSION,
        label: req.label.clone(),
        digest: req.digest.clone(),
        kernel_version: files.version.clone(),
        cmdline: cmdline(&req.cmdline),
        own_cmdline: req.cmdline.trim().to_string(),
        files: entries,
    };
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())? + "\n";
    std::fs::write(dir.join(BOOT_JSON), text)
        .map_err(|e| format!("cannot write boot.json: {e}"))?;
    std::fs::write(dir.join(IPXE), ipxe_script(&json))
        .map_err(|e| format!("cannot write boot.ipxe: {e}"))?;
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_newest_kernel_having_an_initramfs_is_chosen() {
        let n = names(&[
            "System.map-6.1.0-9-amd64",
            "config-6.1.0-10-amd64",
            "initrd.img-6.1.0-9-amd64",
            "initrd.img-6.1.0-10-amd64",
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-10-amd64",
            "vmlinuz-6.1.0-11-amd64",
        ]);
        let b = choose(&n, None, "//x").unwrap();
        assert_eq!(b.version, "6.1.0-10-amd64");
        assert_eq!(b.initrd, "initrd.img-6.1.0-10-amd64");
        let b = choose(&n, Some("6.1.0-9-amd64"), "//x").unwrap();
        assert_eq!(b.kernel, "vmlinuz-6.1.0-9-amd64");
        let e = choose(&n, Some("6.1.0-11-amd64"), "//x").unwrap_err();
        assert!(
            e.contains("no initramfs") && e.contains("initrd.img-6.1.0-11-amd64"),
            "{e}"
        );
        let e = choose(&n, Some("5.10"), "//x").unwrap_err();
        assert!(e.contains("names kernel 5.10"), "{e}");
    }

    #[test]
    fn fedora_names_and_missing_files_are_understood() {
        let n = names(&[
            "vmlinuz-6.5.6-300.fc39.x86_64",
            "initramfs-6.5.6-300.fc39.x86_64.img",
        ]);
        assert_eq!(
            choose(&n, None, "//x").unwrap().initrd,
            "initramfs-6.5.6-300.fc39.x86_64.img"
        );
        let e = choose(&[], None, "//compute/slurm").unwrap_err();
        assert!(e.starts_with("//compute/slurm has no kernel"), "{e}");
        let e = choose(&names(&["vmlinuz-6.1.0-9-amd64"]), None, "//x").unwrap_err();
        assert!(
            e.starts_with("//x has no initramfs for its kernel 6.1.0-9-amd64"),
            "{e}"
        );
    }

    #[test]
    fn versions_compare_by_number() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("6.1.0-10-amd64", "6.1.0-9-amd64"), Greater);
        assert_eq!(version_cmp("6.10", "6.9"), Greater);
        assert_eq!(version_cmp("6.1", "6.1.0"), Less);
        assert_eq!(version_cmp("6.1.0", "6.1.0"), Equal);
    }
}
