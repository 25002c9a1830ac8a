//! CPU architectures a workspace builds for, and their names in each
//! vocabulary: the kernel's (`uname -m`, used in the Layerfile, in S3 keys
//! and in reports), OCI's (`buildah --arch`, image configs, manifest
//! lists) and Debian's (`mmdebstrap --architectures`). No I/O.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// Every architecture layerbuild knows, in the Layerfile's spelling.
pub const KNOWN: &[&str] = &["x86_64", "aarch64"];

impl Arch {
    /// The kernel's name, or OCI's (`amd64`, `arm64`).
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// The kernel's name (`uname -m`): the Layerfile's, S3 keys', reports'.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// OCI's name (`buildah --arch`, image configs, manifest lists).
    pub fn oci(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// Debian's name (`mmdebstrap --architectures`, `dpkg --print-architecture`).
    pub fn debian(self) -> &'static str {
        self.oci()
    }

    /// A setup command as it runs for this architecture: `{arch}` and
    /// `{debian_arch}` replaced (by the executor, and by the fingerprint
    /// when it looks for the workspace paths the command names).
    pub fn expand(self, cmd: &str) -> String {
        cmd.replace("{arch}", self.name())
            .replace("{debian_arch}", self.debian())
    }

    /// The architecture this program runs on (`None`: one it does not know).
    pub fn host() -> Option<Arch> {
        Arch::parse(std::env::consts::ARCH)
    }

    /// Whether commands for this architecture run under emulation here
    /// (qemu-user-static through binfmt_misc).
    pub fn is_foreign(self) -> bool {
        Arch::host() != Some(self)
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Arch;

    #[test]
    fn names_round_trip_in_every_vocabulary() {
        for a in [Arch::X86_64, Arch::Aarch64] {
            assert_eq!(Arch::parse(a.name()), Some(a));
            assert_eq!(Arch::parse(a.oci()), Some(a));
        }
        assert_eq!(Arch::parse("arm"), None);
        assert_eq!(Arch::Aarch64.oci(), "arm64");
        assert_eq!(Arch::X86_64.debian(), "amd64");
        assert_eq!(
            Arch::Aarch64.expand("cp -a o-{arch}/. {root}/ && echo {debian_arch}"),
            "cp -a o-aarch64/. {root}/ && echo arm64"
        );
    }
}
