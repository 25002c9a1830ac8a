//! The executor layer: the backend traits every op receives, and the
//! plain-data requests they take. [`Executor`] turns a [`BuildRequest`] into
//! a committed image, [`ImageStore`] lists and removes images and
//! containers, [`Registry`] is the shared layer cache, [`Exporter`] writes
//! images out; [`Backend`] is all four. [`buildah::Buildah`] is the real
//! backend (buildah + ansible-playbook), [`recording::Recording`] an
//! in-memory one for tests. Failures cross the traits as [`ToolError`].
//!
//! I/O: none here. Of the modules below only [`cli`] starts processes.

pub mod ansible;
pub mod buildah;
pub mod cli;
pub mod error;
pub mod export;
pub mod inspect;
pub mod netboot;
pub mod qemu;
pub mod recording;
pub mod s3;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

pub use error::{ToolError, ToolErrorKind};

use crate::digest::Digest;

/// Everything needed to build one layer; no references to the workspace model.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub label: String,
    pub digest: Digest,
    /// `localhost/layerbuild/WS/TYPE/LAYER:DIGEST12`.
    pub image_name: String,
    pub container_name: String,
    /// Image to start from.
    pub from: BaseImage,
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
    /// Boot tests follow once the build returns: the image that passed
    /// its image tests is named `NAME-unbooted` ([`BuildRequest::built_name`]),
    /// and the caller gives it `NAME` once they passed too, so that a build
    /// killed meanwhile leaves no image under the name of a tested one.
    pub boot_tests_follow: bool,
    /// Commit with this creation time and file timestamps, and nothing of
    /// where the parent came from (reproducible images).
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
    /// The image's architecture: `buildah from --arch` when it is not the
    /// host's (commands then run under qemu-user-static), and `{arch}` /
    /// `{debian_arch}` in setup commands.
    pub arch: crate::arch::Arch,
}

impl BuildRequest {
    /// The name the image has when the build returns: `NAME`, or
    /// `NAME-unbooted` while boot tests are to run.
    pub fn built_name(&self) -> String {
        match self.boot_tests_follow {
            true => unbooted_name(&self.image_name),
            false => self.image_name.clone(),
        }
    }
}

/// The name a layer's image carries until its boot tests pass.
pub fn unbooted_name(image_name: &str) -> String {
    format!("{image_name}-unbooted")
}

/// The image a layer's working container is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseImage {
    Scratch,
    /// An image id or reference.
    Image(String),
    /// The image of this parent layer, not built yet: only in a plan
    /// (`build --dry-run -v`), which shows it as a placeholder; a build of
    /// such a request fails.
    Unbuilt(String),
}

impl BaseImage {
    /// The image, when it is known (`None` for scratch and unbuilt parents).
    pub fn image(&self) -> Option<&str> {
        match self {
            BaseImage::Image(i) => Some(i),
            BaseImage::Scratch | BaseImage::Unbuilt(_) => None,
        }
    }
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
    /// Where Mitogen is looked for (the `mitogen` connection).
    pub mitogen: PathBuf,
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
    /// layerbuild's `mitogen_chroot` (Mitogen): the chroot connection's
    /// namespace and mounts, and one persistent Python interpreter in the
    /// root that serves every task; community.general.chroot when Mitogen
    /// cannot serve or the root has no Python.
    Mitogen,
}

impl Connection {
    pub fn parse(s: &str) -> Connection {
        match s {
            "buildah" => Connection::Buildah,
            "mitogen" => Connection::Mitogen,
            _ => Connection::Chroot,
        }
    }

    /// The Ansible connection plugin.
    pub fn plugin(self) -> &'static str {
        match self {
            Connection::Chroot => "community.general.chroot",
            Connection::Buildah => "containers.podman.buildah",
            Connection::Mitogen => "mitogen_chroot",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub image_id: String,
    /// The image tests it ran, in order.
    pub tests: Vec<TestOutcome>,
}

#[derive(Debug, Clone)]
pub struct BuildFailure {
    /// One line: which step failed.
    pub message: String,
    /// The working container kept for inspection, if any.
    pub container: Option<String>,
    /// The image tests it ran, in order (failed ones among them).
    pub tests: Vec<TestOutcome>,
}

/// Progress callbacks from inside a running build.
pub trait StepSink: Sync {
    /// A new step (e.g. "ansible: TASK [chrony : write chrony.conf]").
    fn step(&self, label: &str, step: &str);
    /// An Ansible task started or ended (secrets already redacted).
    fn task(&self, _label: &str, _event: &TaskEvent) {}
    /// The steps said for `label` outside its build (its outputs) ended.
    fn steps_done(&self, _label: &str) {}
}

/// One line of the events callback (`ansible::EVENTS_FILE`): a task
/// started (`event` "task") or its result ("result", with `status`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct TaskEvent {
    pub event: String,
    /// ok, changed, failed, skipped, unreachable.
    #[serde(default)]
    pub status: Option<String>,
    pub name: String,
    #[serde(default)]
    pub role: Option<String>,
    /// `FILE:LINE` of the task (relative to the play's source once read).
    #[serde(default)]
    pub path: Option<String>,
    /// A failure Ansible was told to ignore.
    #[serde(default, deserialize_with = "null_is_false")]
    pub ignored: bool,
    #[serde(default, deserialize_with = "null_is_false")]
    pub handler: bool,
    /// Seconds from the task's start to this result.
    #[serde(default)]
    pub duration: Option<f64>,
    #[serde(default)]
    pub msg: Option<serde_json::Value>,
    #[serde(default)]
    pub stderr: Option<String>,
    #[serde(default)]
    pub stdout: Option<String>,
    #[serde(default)]
    pub module_stderr: Option<String>,
    #[serde(default)]
    pub rc: Option<i64>,
    /// Unix time, seconds.
    #[serde(default)]
    pub t: f64,
}

fn null_is_false<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(<Option<bool> as serde::Deserialize>::deserialize(d)?.unwrap_or(false))
}

impl TaskEvent {
    /// The task as Ansible's banner names it: `role : name`.
    pub fn title(&self) -> String {
        match &self.role {
            Some(r) if !self.name.starts_with(&format!("{r} : ")) => {
                format!("{r} : {}", self.name)
            }
            _ => self.name.clone(),
        }
    }

    /// A failure that fails the play.
    pub fn is_failure(&self) -> bool {
        self.event == "result"
            && !self.ignored
            && matches!(self.status.as_deref(), Some("failed" | "unreachable"))
    }

    /// What the failed task said: its `msg`, else the end of its stderr
    /// (or stdout), and the exit code.
    pub fn message(&self) -> String {
        let msg = match &self.msg {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        };
        let out = [&self.stderr, &self.module_stderr, &self.stdout]
            .into_iter()
            .flatten()
            .find(|s| !s.trim().is_empty())
            .map(|s| s.trim().to_string());
        let mut said = match (msg.trim().is_empty(), out) {
            (false, Some(out))
                if msg.contains("non-zero return code") || msg == "MODULE FAILURE" =>
            {
                out
            }
            (false, _) => msg.trim().to_string(),
            (true, Some(out)) => out,
            (true, None) => "failed".to_string(),
        };
        if let Some(rc) = self.rc.filter(|rc| *rc != 0)
            && !said.contains("return code")
        {
            said.push_str(&format!(" (rc {rc})"));
        }
        said
    }
}

/// Image names in local storage and the id each names.
pub type ImageNames = HashMap<String, String>;

/// A result of a backend operation.
pub type ToolResult<T> = std::result::Result<T, ToolError>;

/// What a build ends with: the committed image, or the failure and what
/// was kept of it.
pub type BuildResult = std::result::Result<BuildOutput, BuildFailure>;

/// Builds layers: the arrow from a plan to a committed image.
pub trait Executor: Sync {
    /// Checks the tools this executor needs are present; `needs_play` when a
    /// layer to build runs an Ansible playbook.
    fn preflight(&self, needs_play: bool) -> ToolResult<()>;
    /// Checks that commands for `arch`, a foreign architecture, can run
    /// here (under qemu-user-static through binfmt_misc).
    fn emulation(&self, _arch: crate::arch::Arch) -> ToolResult<()> {
        Ok(())
    }
    fn build(&self, req: &BuildRequest, sink: &dyn StepSink) -> BuildResult;
    /// Runs a built image's tests in one fresh container (`layerbuild test`).
    fn run_tests(&self, req: &TestRequest) -> ToolResult<Vec<TestOutcome>>;
    /// Boots a netboot export in a virtual machine and runs its boot
    /// tests (`layerbuild boot`); returns their outcomes (the boot itself
    /// first) and a note on how it ran (TCG, and why).
    fn boot(&self, req: &qemu::BootRequest) -> ToolResult<(Vec<TestOutcome>, Option<String>)> {
        Err(ToolError::new(
            ToolErrorKind::NotStarted,
            "layerbuild",
            "boot",
            format!("this backend cannot boot {}", req.label),
        ))
    }
    /// What [`Executor::build`] would run for `req`, one shell line each,
    /// in order, secret values redacted; values known only while it runs
    /// (the mount point, the image id) as placeholders (`build --dry-run
    /// -v`). Empty when this executor cannot say.
    fn planned_steps(&self, _req: &BuildRequest) -> Vec<String> {
        vec![]
    }
    /// The shell command that runs `args` with this executor's container
    /// tool on the storage it uses (for hints people copy).
    fn tool_command(&self, args: &str) -> String {
        format!("buildah {args}")
    }
}

/// Local container storage: images, their names and labels, and working
/// containers.
pub trait ImageStore: Sync {
    /// Ids of every image in the local store (one query per build).
    fn images(&self) -> ToolResult<HashSet<String>>;
    /// [`ImageStore::images`], with every name the images carry and the id
    /// each names (`None`: this store cannot tell, so names are looked up
    /// one by one).
    fn images_named(&self) -> ToolResult<(HashSet<String>, Option<ImageNames>)> {
        Ok((self.images()?, None))
    }
    /// Every image with its names and size (for `gc` and `cache rebuild-index`).
    fn image_list(&self) -> ToolResult<Vec<ImageInfo>>;
    /// The image named `name` (or with that id) with its layerbuild
    /// labels, `None` when there is none.
    fn committed_image(&self, name: &str) -> ToolResult<Option<inspect::ImageMeta>>;
    /// `rmi NAME`: removes the name, and the image if it was its last name
    /// and no other image is built on it.
    fn remove_image(&self, name: &str) -> ToolResult<RmiOutcome>;
    /// `tag IMAGE NAME`: gives the image another name.
    fn tag_image(&self, image: &str, name: &str) -> ToolResult<()>;
    /// The root directory of this container storage (its graphroot), where
    /// the checkouts sharing it coordinate ([`crate::cache::shared`]);
    /// `None` for a store without one on disk.
    fn storage_root(&self) -> ToolResult<Option<std::path::PathBuf>> {
        Ok(None)
    }
    /// Names of all working containers.
    fn containers(&self) -> ToolResult<HashSet<String>>;
    /// Creates a container named `name` from `image`.
    fn create_container(&self, name: &str, image: &str) -> ToolResult<()>;
    fn remove_container(&self, name: &str) -> ToolResult<()>;
    /// The command line [`ImageStore::run_attached`] runs, as a shell line
    /// to show (`debug` prints it before starting).
    fn attached_command_line(&self, run: &AttachedRun) -> String;
    /// Runs a command (or a shell) in a container on this terminal;
    /// returns its exit code.
    fn run_attached(&self, run: &AttachedRun) -> ToolResult<i32>;
}

/// A shared cache of layer images in an OCI registry.
pub trait Registry: Sync {
    /// Looks a reference up without pulling; `Err` when the registry cannot be asked.
    fn lookup(&self, reference: &str, tls_verify: bool) -> ToolResult<RegistryEntry>;
    /// Pulls a reference; returns the local image id.
    fn pull(&self, reference: &str, tls_verify: bool) -> ToolResult<String>;
    fn push(&self, image_id: &str, reference: &str, tls_verify: bool) -> ToolResult<()>;
    /// The `layerbuild.digest` label of a local image.
    fn digest_label(&self, image_id: &str) -> ToolResult<Digest>;
    /// The architecture of a local image, in OCI's vocabulary (`amd64`,
    /// `arm64`); `None` when it does not say.
    fn image_arch(&self, _image_id: &str) -> ToolResult<Option<String>> {
        Ok(None)
    }
    /// The architecture (OCI's name) of the image a registry reference
    /// names; `None` when it does not say.
    fn remote_arch(&self, _reference: &str, _tls_verify: bool) -> ToolResult<Option<String>> {
        Ok(None)
    }
    /// The digest of the manifest a registry reference (`host/repo:tag`)
    /// names (`sha256:...`), `None` when the tag is absent.
    fn manifest_digest(&self, reference: &str, tls_verify: bool) -> ToolResult<Option<String>>;
    /// Gives the manifest `from` names a second tag `to` in the same
    /// registry: a copy of the manifest, as it is (its digest preserved),
    /// uploading no blob the registry already has.
    fn copy_tag(&self, from: &str, to: &str, tls_verify: bool) -> ToolResult<()>;
    /// The entries (OCI architecture, manifest digest) of the manifest
    /// list a reference names; empty when it names a single image's
    /// manifest, `None` when the tag is absent.
    fn manifest_list(
        &self,
        reference: &str,
        _tls_verify: bool,
    ) -> ToolResult<Option<Vec<(String, String)>>> {
        Err(no_lists(reference))
    }
    /// Tags `to` with a manifest list of the images `sources` name, all in
    /// `to`'s repository: only the list is written (no image is copied).
    fn put_manifest_list(
        &self,
        to: &str,
        _sources: &[String],
        _tls_verify: bool,
    ) -> ToolResult<()> {
        Err(no_lists(to))
    }
}

fn no_lists(reference: &str) -> ToolError {
    ToolError::new(
        ToolErrorKind::Failed,
        "registry",
        "manifest list",
        format!("{reference}: this backend keeps no manifest lists"),
    )
}

/// Exports and pushes of committed images.
pub trait Exporter: Sync {
    /// Is this image in the local store?
    fn has_image(&self, image_id: &str) -> ToolResult<bool>;
    /// Writes an export atomically; returns the bytes written.
    fn export(&self, req: &export::ExportRequest) -> ToolResult<u64>;
    /// `push` to any destination (`docker://...`, `oci-archive:...`).
    fn push_to(&self, image_id: &str, destination: &str, tls_verify: bool) -> ToolResult<()>;
    /// The `layerbuild.digest` label of a registry image (`host/repo:tag`),
    /// `None` when it is absent.
    fn remote_digest_label(&self, reference: &str, tls_verify: bool) -> ToolResult<Option<Digest>>;
}

/// An object as [`ObjectStore::head`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// The `sha256` metadata the object was uploaded with, if any.
    pub sha256: Option<String>,
}

/// S3-compatible object storage, one bucket, for `publish`. Keys are full
/// keys within the bucket. Credentials are the implementation's business
/// and never cross this trait.
pub trait ObjectStore: Sync {
    /// The object at `key`, `None` when there is none.
    fn head(&self, key: &str) -> ToolResult<Option<ObjectInfo>>;
    /// Uploads the file at `path` to `key` (in parts when it is large),
    /// with `sha256` (hex) as its `sha256` metadata; replaces any object
    /// there in one step (S3 never shows a half-written object).
    fn put_file(&self, key: &str, path: &Path, sha256: &str, content_type: &str) -> ToolResult<()>;
    /// Reads the object back whole: the sha256 (hex) and size of its bytes.
    fn read_sha256(&self, key: &str) -> ToolResult<(String, u64)>;
    /// The bytes of a small object, `None` when there is none.
    fn get(&self, key: &str) -> ToolResult<Option<Vec<u8>>>;
    /// Every key starting with `prefix`, sorted.
    fn list(&self, prefix: &str) -> ToolResult<Vec<String>>;
    /// `s3://BUCKET/KEY`, for people.
    fn url(&self, key: &str) -> String;
}

/// Everything an op may ask of the machine. One trait with supertraits
/// rather than a struct of `&dyn` parts: every real and test backend
/// implements all four over one store (a pull must show up in the image
/// list, a build in `committed_image`), so one object is the honest unit,
/// and `&dyn Backend` upcasts to any part for code that needs only one.
pub trait Backend: Executor + ImageStore + Registry + Exporter {}

impl<T: Executor + ImageStore + Registry + Exporter> Backend for T {}

/// How a registry lookup went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEntry {
    /// The tag exists and its image carries this `layerbuild.digest` label.
    Present {
        label: Digest,
    },
    Absent,
}

/// One image of the local store.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub id: String,
    pub names: Vec<String>,
    /// Bytes, as the store reports them (the whole image, shared layers included).
    pub size: u64,
}

/// How removing an image name went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmiOutcome {
    /// The image is gone.
    Removed,
    /// The name is gone; the image stays (another name, or images built on it).
    Untagged,
    /// There was no such image.
    NotKnown,
    /// A container uses the image.
    InUse,
}

/// A run of a layer's image tests.
#[derive(Debug, Clone)]
pub struct TestRequest {
    pub label: String,
    pub isolation: String,
    /// The image to test (an id).
    pub image: String,
    /// The name of the container the tests run in.
    pub container: String,
    pub tests: Vec<String>,
    /// Where the log of this run goes.
    pub log_path: PathBuf,
}

/// How one image test went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestOutcome {
    pub command: String,
    pub passed: bool,
    /// The failure (exit status), when it failed.
    pub error: Option<String>,
    /// The last lines of its output.
    pub output: String,
    pub duration_ms: u64,
}

/// A command run attached to the terminal in a container (`debug`).
#[derive(Debug, Clone)]
pub struct AttachedRun {
    pub container: String,
    pub isolation: String,
    pub tty: bool,
    /// The command; empty for a shell.
    pub argv: Vec<String>,
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
