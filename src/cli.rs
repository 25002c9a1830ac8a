//! Command-line types (clap derive) only; no logic.
//! No I/O: clap reads the arguments it is given.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::ops::graph::GraphFormat;

/// The help heading of the options every command takes, apart from each
/// command's own.
pub const GLOBAL: &str = "Global options";

/// Declarative, content-addressed builds of layered node images with buildah and Ansible.
///
/// Layers are declared in Layerfile.toml; each layer's inputs are hashed into a
/// digest, and only layers whose digest is not in the cache are rebuilt.
#[derive(Debug, Parser)]
#[command(name = "layerbuild", version, propagate_version = true)]
pub struct Cli {
    /// Run as if started in DIR (the workspace is DIR or its nearest parent holding Layerfile.toml).
    #[arg(short = 'C', global = true, value_name = "DIR", help_heading = GLOBAL)]
    pub directory: Option<PathBuf>,

    #[command(flatten)]
    pub storage: StorageArgs,

    #[command(flatten)]
    pub ui: UiArgs,

    /// The CPU architecture to work on: one of `[build] architectures`
    /// (x86_64, aarch64), repeated for several, or `all`. `build`,
    /// `promote` and `publish` cover every architecture of the workspace
    /// by default; other commands the host's (else the first declared).
    #[arg(long, global = true, value_name = "ARCH", help_heading = GLOBAL)]
    pub arch: Vec<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// How output looks.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// No progress and no notes: only warnings, errors and the final report.
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = GLOBAL
    )]
    pub quiet: bool,
    /// More detail where there is more to say (`build -n -v`: the commands
    /// each build would run; `ls -v`: image names; `hash -v`: the input files).
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub verbose: bool,
    /// Progress on stderr: `tty` a live display, `plain` timestamped lines
    /// for logs (each step and Ansible task); `auto`: tty on a terminal.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "MODE",
        default_value = "auto",
        env = "LAYERBUILD_PROGRESS",
        help_heading = GLOBAL
    )]
    pub progress: crate::progress::ProgressMode,
    /// Colour on stderr: `auto` on a terminal unless NO_COLOR is set.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "WHEN",
        default_value = "auto",
        help_heading = GLOBAL
    )]
    pub color: crate::progress::ColorMode,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build layers (and their ancestors) that are not in the cache.
    Build(BuildArgs),
    /// Print a layer's digest (first line) and a summary of its inputs.
    Hash(HashArgs),
    /// Print the layer graph, with each layer's status under --status.
    ///
    /// Formats: text (a tree), dot, mermaid, svg and html (drawn by
    /// Graphviz's dot: apt-get install graphviz), json. With --status, each
    /// layer shows what `ls` says of it (up to date, needs build, failed,
    /// never built), coloured, with its short digest and its last build's
    /// duration.
    Graph(GraphArgs),
    /// List layers with their status: up to date, needs build, failed, never built.
    Ls(LsArgs),
    /// Explain why layers need building (or that they are up to date), down to the file, variable or package.
    Why(WhyArgs),
    /// Compare the recorded manifests of two digests (prefixes accepted).
    HashDiff(HashDiffArgs),
    /// Print the full log of a layer's last (or a given) build, failed ones included.
    Log(LogArgs),
    /// List recent builds, newest first: time, layer, system, outcome, duration, digest, log.
    ///
    /// Every attempt the cache recorded counts, failed ones included (with
    /// the first line of their error). Without LABEL, every recorded build,
    /// of layers since removed from the Layerfile too.
    History(HistoryArgs),
    /// Open a shell (or run a command) in a failed layer's kept container, or with --fresh in a new one.
    Debug(DebugArgs),
    /// Remove kept working containers of failed builds.
    Clean(CleanArgs),
    /// Remove old images, cache rows and logs, and working containers of dead builds.
    ///
    /// Current digests are those of every layer for every declared system.
    /// Per layer (and system), gc keeps every current digest's image and
    /// cache row plus the newest older ones, N in all (--keep); it removes
    /// the other digests' images, cache rows, build history and logs, and
    /// this workspace's images no cache row names (left by an interrupted
    /// gc). The image a current digest's cache row names is never removed.
    ///
    /// It also removes this workspace's working containers whose build
    /// process is gone (its pid in the storage's
    /// layerbuild/owners/CONTAINER is not running). Kept containers of
    /// failed builds are left to `layerbuild clean --failed`. Only images
    /// named localhost/layerbuild/WORKSPACE/... and containers named
    /// layerbuild-WORKSPACE-... are touched, and never an image the cache
    /// of another checkout sharing the container storage names.
    Gc(GcArgs),
    /// List the layers whose digest changed since a git revision, with the reason.
    Affected(AffectedArgs),
    /// Run a built layer's image tests again (with --all, its ancestors' too).
    Test(TestArgs),
    /// Boot a built layer's image in QEMU as a diskless node and run its boot tests (or CMD).
    Boot(BootArgs),
    /// Export a built layer's image: OCI or docker archive, OCI layout, root file system tar, squashfs, or a netboot directory.
    Export(ExportArgs),
    /// Push a built layer's image to a registry or any buildah push destination.
    Push(PushArgs),
    /// Point a release tag at the image of a built, pushed and tested layer in the shared registry.
    ///
    /// The release tag REGISTRY/TYPE/LAYER:NAME gets the manifest of the
    /// layer's content tag REGISTRY/TYPE/LAYER:DIGEST (its current digest,
    /// or --digest): a manifest copy within the registry (skopeo copy
    /// --preserve-digests), the very bytes that were tested, with no
    /// rebuild and no upload of blobs.
    ///
    /// Refused (exit 1) when the digest has no cache row (not built here,
    /// or its build, image tests or boot tests failed: failures are never
    /// cached) or the registry lacks its content tag; and when the release
    /// tag holds another digest, unless --force (the refusal names the
    /// digest it holds). Every promotion is recorded in the cache, with
    /// who made it (CI_JOB_URL, else USER): `layerbuild releases` lists
    /// them.
    Promote(PromoteArgs),
    /// Publish a built and tested layer's netboot export to S3-compatible
    /// storage ([publish.s3]) as release NAME.
    ///
    /// Uploads <prefix>/by-digest/<digest>/<arch>/{vmlinuz,initramfs.img,
    /// rootfs.squashfs,boot.json} once (each read back and its sha256
    /// checked; skipped when the bucket holds it), then the release pointers
    /// <prefix>/<release>/<arch>/boot.ipxe and release.json (last). An
    /// interrupted publish leaves the previous release whole; run it again
    /// to finish. Refused (exit 1) for a release holding another layer,
    /// unless --force. Credentials come from the AWS environment and files.
    /// Recorded in the cache: `layerbuild releases` lists it.
    Publish(PublishArgs),
    /// List the recorded promotions, newest first: time, release, layer, system, digest, who, release tag.
    Releases(ReleasesArgs),
    /// Generate CI configuration.
    #[command(subcommand)]
    Ci(CiCommand),
    /// Check the Layerfile and the layers' playbooks without building: every problem at once.
    Lint(LintArgs),
    /// Check the cache index against container storage, or rebuild it from the images.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Write a minimal working workspace: a busybox base layer, an Ansible
    /// layer with one role, an inventory with one system.
    ///
    /// Refuses to write over an existing Layerfile.toml. Then:
    /// `layerbuild -C DIR build //...`.
    Init(InitArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// bash: `source <(layerbuild completions bash)`, or save it as
    /// /usr/share/bash-completion/completions/layerbuild.
    Completions(CompletionsArgs),
    /// Print the man page (roff), or with DIR write one page per command there.
    ///
    /// `layerbuild man | man -l -`; `layerbuild man /usr/local/share/man/man1`.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write it (created if missing; default: the current directory or -C DIR).
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write layerbuild.1 and a layerbuild-COMMAND.1 per command into DIR
    /// instead of printing layerbuild.1.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Check every cache row against container storage, and the database's integrity.
    ///
    /// Each row's image must be in container storage and carry the row's
    /// digest label (layerbuild.digest); PRAGMA integrity_check must be ok.
    /// Exits 1 when a problem is left; --repair deletes the bad rows (the
    /// next build rebuilds those layers, or adopts their image).
    Verify(CacheVerifyArgs),
    /// Rebuild the cache index from this workspace's images in container storage.
    ///
    /// A row is recorded for every image named localhost/layerbuild/WS/...
    /// whose layerbuild.digest and layerbuild.label labels match its name.
    ///
    /// A damaged database is moved aside first (layerbuild.db.damaged-TIME).
    /// Images of the current layers get their full manifest; older ones an
    /// unknown manifest (`why` cannot compare against those). Logs and the
    /// build history are not recovered.
    RebuildIndex(CacheRebuildArgs),
}

#[derive(Debug, Args)]
pub struct CacheVerifyArgs {
    /// Delete the rows whose image is missing or labelled with another digest.
    #[arg(long)]
    pub repair: bool,
    /// Print {version, database, rows, integrity, problems, repaired} as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CacheRebuildArgs {
    /// Print {version, database, moved_aside, images, recorded, notes} as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Layers whose playbooks to check: //TYPE/LAYER, //TYPE/... or //... (default //...).
    #[arg(value_name = "LABEL")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub system: SystemArg,
    /// Print {version, findings, notes} as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The layers: //TYPE/LAYER, //TYPE/... or //... (each matching layer, in topological order).
    #[arg(value_name = "LABEL", required = true)]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub system: SystemArg,
    /// Also run the tests of every ancestor, oldest first.
    #[arg(long)]
    pub all: bool,
    /// buildah isolation (overrides [build] isolation).
    #[arg(long, value_parser = ["chroot", "oci", "rootless"])]
    pub isolation: Option<String>,
    /// Also boot each layer that has boot_tests in a virtual machine and
    /// run them there (after its image tests).
    #[arg(long)]
    pub boot: bool,
    /// Print a machine-readable report on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the results as JUnit XML (for CI test reports).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BootArgs {
    /// The layer: //TYPE/LAYER, or a pattern matching one layer (built at its current digest).
    #[arg(value_name = "LABEL")]
    pub label: String,
    #[command(flatten)]
    pub system: SystemArg,
    /// A serial console on this terminal (Ctrl-A X quits), no tests.
    #[arg(long, conflicts_with = "command")]
    pub interactive: bool,
    #[arg(long)]
    pub json: bool,
    /// Run this in the booted system instead of the layer's boot_tests.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The layer: //TYPE/LAYER, or a pattern matching one layer (built at its current digest).
    #[arg(value_name = "LABEL")]
    pub label: String,
    #[command(flatten)]
    pub system: SystemArg,
    #[arg(long, short = 'f', value_enum, value_name = "FORMAT")]
    pub format: crate::workspace::ExportFormat,
    /// Where to write it (written to a temporary name, then renamed).
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: std::path::PathBuf,
    /// squashfs compressor: gzip, lzo, lz4, xz, zstd or lzma (default: mksquashfs's, gzip).
    #[arg(long, value_name = "COMP")]
    pub compression: Option<String>,
    /// Write it even if PATH already holds this digest.
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The layer: //TYPE/LAYER, or a pattern matching one layer (built at its current digest).
    #[arg(value_name = "LABEL")]
    pub label: String,
    /// host[:port]/repo[:tag], docker://..., oci-archive:PATH, ... (default tag: TYPE-LAYER-DIGEST12).
    #[arg(value_name = "DEST")]
    pub destination: String,
    #[command(flatten)]
    pub system: SystemArg,
    /// Verify the registry's TLS certificate (--tls-verify=false for a plain-HTTP registry).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// Push even if the destination already holds this digest.
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The layer: //TYPE/LAYER, or a pattern matching one layer.
    #[arg(value_name = "LABEL")]
    pub label: String,
    /// The release: a tag such as stable or 2026.12.
    #[arg(long = "to", value_name = "NAME", required = true)]
    pub to: String,
    #[command(flatten)]
    pub system: SystemArg,
    /// Promote this digest of the layer (or a unique prefix) instead of its current one.
    #[arg(long, value_name = "DIGEST")]
    pub digest: Option<String>,
    /// Shared cache registry, host[:port]/path (overrides [cache] registry).
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,
    /// Check everything and say what would be done, changing neither the registry nor the cache.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Move a release tag that holds another digest.
    #[arg(long)]
    pub force: bool,
    /// Print {version, release, label, system, digest, reference, source,
    /// manifest_digest, previous, status, dry_run, promoted_at, promoted_by} as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The layer: //TYPE/LAYER, or a pattern matching one layer.
    #[arg(value_name = "LABEL")]
    pub label: String,
    /// The release: a name such as stable or 2026.12.
    #[arg(long, value_name = "NAME", required = true)]
    pub release: String,
    #[command(flatten)]
    pub system: SystemArg,
    /// Take over a release that holds another layer.
    #[arg(long)]
    pub force: bool,
    /// Print {version, release, label, system, digest, arch, pointer, ipxe,
    /// objects: [{name, key, sha256, bytes, status}], previous, status,
    /// published_at, published_by} as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReleasesArgs {
    /// Layers (//TYPE/LAYER, //TYPE/..., //...) and release names (stable)
    /// whose promotions to list (default: every one).
    #[arg(value_name = "LABEL|RELEASE")]
    pub filters: Vec<String>,
    /// Print {version, releases: [{release, label, system, digest, reference,
    /// manifest_digest, previous, promoted_at, promoted_by}]} as JSON, newest first.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AffectedArgs {
    /// The git revision to compare with.
    #[arg(long, value_name = "REV", required = true)]
    pub since: String,
    /// Compare with this revision instead of the working tree.
    #[arg(long, value_name = "REV")]
    pub until: Option<String>,
    #[command(flatten)]
    pub system: SystemArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CiCommand {
    /// Write a GitLab CI child pipeline: one job per layer that needs building.
    Gitlab(GitlabArgs),
}

#[derive(Debug, Args)]
pub struct GitlabArgs {
    /// Labels to consider (default //...).
    #[arg(value_name = "LABEL")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub system: SystemArg,
    /// Without a registry: jobs for the layers affected since this git revision.
    /// `auto`: the merge request's base (CI_MERGE_REQUEST_DIFF_BASE_SHA), else
    /// the commit before the push (CI_COMMIT_BEFORE_SHA). A revision that is
    /// all zeros, missing from the clone, or without Layerfile.toml makes every
    /// layer count, with a note.
    #[arg(long, value_name = "REV|auto")]
    pub since: Option<String>,
    /// Shared cache registry (overrides [cache] registry).
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,
    /// Write the pipeline here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Where buildah keeps images and containers (machine configuration).
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Containers storage root (buildah --root); overrides [build] storage_root.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "LAYERBUILD_STORAGE_ROOT",
        help_heading = GLOBAL
    )]
    pub storage_root: Option<PathBuf>,
    /// Containers run root (buildah --runroot); default STORAGE_ROOT/run.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "LAYERBUILD_STORAGE_RUNROOT",
        help_heading = GLOBAL
    )]
    pub storage_runroot: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SystemArg {
    /// The system (Ansible inventory + vars); required when several are declared.
    /// `ls`, `why`, `hash`, `build -n` and `ci gitlab` take several
    /// (repeat it) or `all` (every declared system).
    #[arg(long, value_name = "NAME", env = "LAYERBUILD_SYSTEM")]
    pub system: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Labels to build: //TYPE/LAYER, //TYPE/... or //...
    #[arg(value_name = "LABEL", required = true)]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub system: SystemArg,
    /// Layers to build at once (default: [build] jobs, else the number of cores).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// After a failure, keep building branches that do not depend on it.
    #[arg(short, long)]
    pub keep_going: bool,
    /// buildah isolation for run steps (overrides [build] isolation).
    #[arg(long, value_parser = ["chroot", "oci", "rootless"])]
    pub isolation: Option<String>,
    /// Print a machine-readable report on stdout.
    #[arg(long)]
    pub json: bool,
    /// Show the plan (each layer up to date, needs build or never built,
    /// with a one-line reason) without building; with -v, under each layer
    /// to build, the commands its build would run.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Re-run the layer's steps in the container kept from its last failed build (never cached).
    #[arg(long, conflicts_with = "dry_run")]
    pub from_failed: bool,
    /// Shared cache registry, host[:port]/path (overrides [cache] registry).
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,
    /// How the shared registry is used (overrides [cache] mode).
    #[arg(long, value_enum, value_name = "MODE", env = "LAYERBUILD_CACHE_MODE")]
    pub cache_mode: Option<crate::workspace::CacheMode>,
    /// Do not perform the layers' declared outputs (exports and pushes).
    #[arg(long)]
    pub no_outputs: bool,
    /// Also write the image tests this build ran as JUnit XML (for CI test reports).
    #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
    pub junit: Option<PathBuf>,
    /// Also write a Chrome trace of the build (open it in ui.perfetto.dev):
    /// a track per worker, spans per layer, step and Ansible task.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dry_run", "from_failed"])]
    pub profile: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HashArgs {
    /// The layers: //TYPE/LAYER, //TYPE/... or //... (each matching layer, in topological order).
    #[arg(value_name = "LABEL", required = true)]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub system: SystemArg,
    /// Print {version, label, digest, system, inputs} as JSON, inputs being the full manifest
    /// (several layers or systems: {version, layers: [...]}).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Layers to show: //TYPE/LAYER, //TYPE/... or //... (default: every layer); their ancestors are shown too.
    #[arg(value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Output format (svg and html are drawn by Graphviz's dot).
    #[arg(long, value_enum, default_value = "dot")]
    pub format: GraphFormat,
    /// Show each layer's status (up to date, needs build, failed, never built), short digest and last build's duration.
    #[arg(long)]
    pub status: bool,
    #[command(flatten)]
    pub system: SystemArg,
    /// Print the graph as JSON (--format json); with --status each node also has status, digest and last (its newest build).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Layers to list: //TYPE/LAYER, //TYPE/... or //... (default: every layer).
    #[arg(value_name = "LABEL", conflicts_with = "failed")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub system: SystemArg,
    /// List the kept working containers of failed builds instead.
    #[arg(long)]
    pub failed: bool,
    /// Print {version, layers: [{label, system, digest, status, image_name}]} as JSON
    /// (--failed: {version, containers: [...]}).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WhyArgs {
    /// The layers: //TYPE/LAYER, //TYPE/... or //... (each matching layer, in topological order).
    /// With --release: the one layer (default: the one the release was recorded for).
    #[arg(value_name = "LABEL", required_unless_present = "release")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub system: SystemArg,
    /// Compare with the inputs at this git revision instead of the last build.
    #[arg(long, value_name = "REV")]
    pub since: Option<String>,
    /// Compare with a release (`promote`) instead of the last build:
    /// once, from the release to the current inputs; twice (A, then B),
    /// from release A to release B. Diffs the manifests the cache
    /// recorded for their digests.
    #[arg(long, value_name = "NAME", conflicts_with = "since")]
    pub release: Vec<String>,
    /// Show variable values (never those from ansible-vault).
    #[arg(long)]
    pub show_values: bool,
    /// Print the explanation as JSON (several layers or systems: {version, layers: [...]}).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HashDiffArgs {
    /// The older digest (or a unique prefix).
    #[arg(value_name = "DIGEST_A")]
    pub a: String,
    /// The newer digest (or a unique prefix).
    #[arg(value_name = "DIGEST_B")]
    pub b: String,
    /// Show variable values (never those from ansible-vault).
    #[arg(long)]
    pub show_values: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// The layer: //TYPE/LAYER, or a pattern matching one layer
    #[arg(value_name = "LABEL")]
    pub label: String,
    #[command(flatten)]
    pub system: SystemArg,
    /// The build with this digest (or prefix) instead of the last one.
    #[arg(long, value_name = "DIGEST")]
    pub digest: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Layers whose builds to list: //TYPE/LAYER, //TYPE/... or //... (default: every build).
    #[arg(value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Only the builds for this system (default: every system's).
    #[arg(long, value_name = "NAME", env = "LAYERBUILD_SYSTEM")]
    pub system: Option<String>,
    /// How many builds to list, newest first.
    #[arg(short = 'n', long = "limit", value_name = "N", default_value_t = crate::ops::history::DEFAULT_LIMIT)]
    pub limit: usize,
    /// Print {version, system, builds: [{id, started_at, label, system, outcome, source, duration_ms, digest, error, log_path}]} as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DebugArgs {
    /// The layer: //TYPE/LAYER, or a pattern matching one layer
    #[arg(value_name = "LABEL")]
    pub label: String,
    #[command(flatten)]
    pub system: SystemArg,
    /// Start a new container from the layer's built image instead of the kept one.
    #[arg(long)]
    pub fresh: bool,
    /// buildah isolation (overrides [build] isolation).
    #[arg(long, value_parser = ["chroot", "oci", "rootless"])]
    pub isolation: Option<String>,
    /// Command to run instead of an interactive shell (after --).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Images to keep per layer, the current one included: 2 keeps the
    /// current image and the newest older one; 0 keeps the current one only
    /// (it is never removed).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 3,
        allow_negative_numbers = true
    )]
    pub keep: i64,
    /// List what would be removed, and the space it would free, without removing it.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print a machine-readable report on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Remove the kept working containers of failed builds.
    #[arg(long, required = true)]
    pub failed: bool,
}
