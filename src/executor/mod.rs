//! Executors turn a plain-data [`BuildRequest`] into a committed image.
//! [`buildah::Buildah`] is the real one (buildah + ansible-playbook); tests of
//! scheduling may use a recording executor. Only executors spawn processes.

pub mod ansible;
pub mod buildah;
pub mod export;
pub mod inspect;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::error::Result;

/// Everything needed to build one layer; no references to the workspace model.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub label: String,
    pub digest: String,
    /// `localhost/layerbuild/WS/TYPE/LAYER:DIGEST12`.
    pub image_name: String,
    pub container_name: String,
    /// Image to start from; `None` for scratch.
    pub from: Option<String>,
    pub workspace_root: PathBuf,
    pub isolation: String,
    pub setup: Vec<String>,
    pub packages: Vec<String>,
    pub package_command: String,
    /// Absolute paths of scripts to copy in and run, in order.
    pub scripts: Vec<PathBuf>,
    pub run: Vec<String>,
    pub play: Option<PlayRequest>,
    /// Commands run in a fresh container from the committed image.
    pub tests: Vec<String>,
    /// Commit with this creation time and file timestamps (reproducible images).
    pub timestamp: Option<i64>,
    /// Where the full log of this build goes.
    pub log_path: PathBuf,
    /// Scratch space for generated files (inventory, vars).
    pub work_dir: PathBuf,
    /// Re-run the steps in the existing container `container_name` (kept from
    /// a failed build) instead of a clean one, and commit nothing.
    pub reuse_container: bool,
    /// Values redacted from the log, progress lines and error messages.
    pub secrets: crate::secrets::Secrets,
}

#[derive(Debug, Clone)]
pub struct PlayRequest {
    pub source_dir: PathBuf,
    pub playbook: String,
    /// The Ansible inventory host name of the working container.
    pub host_name: String,
    pub groups: Vec<String>,
    pub inventory: Option<PathBuf>,
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub roles_path: Vec<PathBuf>,
    /// How ansible-playbook reaches the working container.
    pub connection: Connection,
    /// Variables files holding ansible-vault data (absolute): what Ansible
    /// decrypts from them is redacted from its output.
    pub vault_files: Vec<PathBuf>,
}

/// How ansible-playbook reaches the working container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// `community.general.chroot` on the mounted root, in a private mount
    /// namespace with /proc, /sys and a minimal /dev: one `chroot` process
    /// per task step.
    Chroot,
    /// `containers.podman.buildah`: one `buildah run` per task step, with
    /// pipelining.
    Buildah,
}

impl Connection {
    pub fn parse(s: &str) -> Connection {
        if s == "buildah" {
            Connection::Buildah
        } else {
            Connection::Chroot
        }
    }

    /// The Ansible connection plugin.
    pub fn plugin(self) -> &'static str {
        match self {
            Connection::Chroot => "community.general.chroot",
            Connection::Buildah => "containers.podman.buildah",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub image_id: String,
}

#[derive(Debug, Clone)]
pub struct BuildFailure {
    /// One line: which step failed.
    pub message: String,
    /// The working container kept for inspection, if any.
    pub container: Option<String>,
}

/// Progress callbacks from inside a running build.
pub trait StepSink: Sync {
    /// A new step (e.g. "ansible: TASK [chrony : write chrony.conf]").
    fn step(&self, label: &str, step: &str);
}

/// Image names in local storage and the id each names.
pub type ImageNames = HashMap<String, String>;

pub trait Executor: Sync {
    /// Checks the tools this executor needs are present; `needs_play` when a
    /// layer to build runs an Ansible playbook.
    fn preflight(&self, needs_play: bool) -> Result<()>;
    /// Ids of every image in the local store (one query per build).
    fn images(&self) -> Result<HashSet<String>>;
    /// [`Executor::images`], with every name the images carry and the id
    /// each names (`None`: this executor cannot tell, so names are looked
    /// up one by one).
    fn images_named(&self) -> Result<(HashSet<String>, Option<ImageNames>)> {
        Ok((self.images()?, None))
    }
    fn build(
        &self,
        req: &BuildRequest,
        sink: &dyn StepSink,
    ) -> std::result::Result<BuildOutput, BuildFailure>;
    /// The image named `name` (or with that id) in local storage with its
    /// layerbuild labels, `None` when there is none. An executor that
    /// cannot tell never adopts, and reuses a cache row only when the
    /// listing shows the layer's own name on the row's image.
    fn committed_image(&self, _name: &str) -> Result<Option<inspect::ImageMeta>> {
        Ok(None)
    }
    /// The shell command that runs `args` with this executor's container
    /// tool on the storage it uses (for hints people copy).
    fn tool_command(&self, args: &str) -> String {
        format!("buildah {args}")
    }
}

/// A shared cache of layer images in an OCI registry.
pub trait Registry: Sync {
    /// Looks a reference up without pulling; `Err` when the registry cannot be asked.
    fn lookup(
        &self,
        reference: &str,
        tls_verify: bool,
    ) -> std::result::Result<buildah::RegistryEntry, String>;
    /// Pulls a reference; returns the local image id.
    fn pull(&self, reference: &str, tls_verify: bool) -> std::result::Result<String, String>;
    fn push(
        &self,
        image_id: &str,
        reference: &str,
        tls_verify: bool,
    ) -> std::result::Result<(), String>;
    /// The `layerbuild.digest` label of a local image.
    fn digest_label(&self, image_id: &str) -> std::result::Result<String, String>;
}

/// Exports and pushes of committed images.
pub trait Exporter: Sync {
    /// Is this image in the local store?
    fn has_image(&self, image_id: &str) -> Result<bool>;
    /// Writes an export atomically; returns the bytes written.
    fn export(&self, req: &export::ExportRequest) -> std::result::Result<u64, String>;
    /// `buildah push` to any destination (`docker://...`, `oci-archive:...`).
    fn push_to(
        &self,
        image_id: &str,
        destination: &str,
        tls_verify: bool,
    ) -> std::result::Result<(), String>;
    /// The `layerbuild.digest` label of a registry image (`host/repo:tag`),
    /// `None` when it is absent.
    fn remote_digest_label(
        &self,
        reference: &str,
        tls_verify: bool,
    ) -> std::result::Result<Option<String>, String>;
}

/// `s` as one shell word: as it is when it holds only safe characters,
/// else in single quotes.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@%,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(super::shell_quote("/var/lib/x.conf"), "/var/lib/x.conf");
        assert_eq!(super::shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(super::shell_quote("it's"), "'it'\\''s'");
        assert_eq!(super::shell_quote(""), "''");
    }
}
