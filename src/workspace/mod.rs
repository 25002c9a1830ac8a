//! The validated workspace model: `Layerfile.toml` (plus include fragments)
//! parsed, checked and resolved into [`Workspace`], whose invariants the rest
//! of the program trusts: every label well formed and unique, every parent
//! known or pinned, every named path present and relative.
//!
//! I/O: reads the Layerfile, its fragments, and checks that named paths
//! exist (reading `packages_file`). Nothing is written.

mod layerfile;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use toml::Spanned;

use crate::arch::Arch;
use crate::error::{Error, Location, Result};
use crate::label::Label;
use layerfile::{RawFragment, RawLayer, RawLayerfile, RawOutput, RawSystem};

pub const LAYERFILE: &str = "Layerfile.toml";
pub const DEFAULT_PACKAGE_COMMAND: &str = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {packages}";
const ISOLATIONS: &[&str] = &["chroot", "oci", "rootless"];
/// How ansible-playbook reaches the working container.
pub const ANSIBLE_CONNECTIONS: &[&str] = &["chroot", "buildah", "mitogen"];
/// mksquashfs compressors.
pub const SQUASHFS_COMPRESSORS: &[&str] = &["gzip", "lzo", "lz4", "xz", "zstd", "lzma"];

#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    /// Absolute directory holding `Layerfile.toml`; every path in the model is relative to it.
    pub root: PathBuf,
    pub layerfile: PathBuf,
    pub name: String,
    /// Absolute cache directory (SQLite database, logs).
    pub cache_dir: PathBuf,
    /// Canonical absolute directories outside the workspace that Layerfile
    /// paths and symlinks may lead into (`[workspace] allow_outside`).
    pub allow_outside: Vec<PathBuf>,
    pub build: BuildSettings,
    pub systems: BTreeMap<String, System>,
    pub layers: BTreeMap<Label, Layer>,
    pub cache: CacheSettings,
    pub gitlab: GitlabSettings,
    /// `[publish.s3]`, when set.
    pub publish_s3: Option<S3Settings>,
    /// The architecture this model is for: `layers` holds the layers built
    /// for it ([`Workspace::for_arch`]). The host's when the workspace
    /// builds for it, else the first of `[build] architectures`.
    pub arch: Arch,
    /// The layers not built for `arch` (for [`Workspace::for_arch`] and
    /// for errors naming one of them).
    #[serde(skip)]
    pub other_arch_layers: BTreeMap<Label, Layer>,
}

/// `[publish.s3]`: the bucket `layerbuild publish` writes netboot releases
/// to. Credentials are not part of it: the S3 client reads them from the
/// standard AWS environment variables and files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct S3Settings {
    /// `https://host[:port]`; `None`: AWS itself.
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
    pub region: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildSettings {
    pub isolation: String,
    pub jobs: usize,
    pub package_command: String,
    pub storage_root: Option<PathBuf>,
    pub storage_runroot: Option<PathBuf>,
    pub storage_driver: String,
    /// How plays reach the working container (default `mitogen`).
    pub ansible_connection: String,
    /// Commit with fixed timestamps so equal inputs give equal images
    /// (`[build] reproducible = true`, or `SOURCE_DATE_EPOCH` set).
    pub reproducible: bool,
    /// The timestamp reproducible images carry: `SOURCE_DATE_EPOCH`, else 0.
    /// Not an input: the same inputs committed at another epoch are the same layer.
    pub source_date_epoch: i64,
    /// `[build] architectures`: what every layer is built for unless it
    /// restricts itself (default `["x86_64"]`), in the order given.
    pub architectures: Vec<Arch>,
}

/// The shared cache in an OCI registry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheSettings {
    pub registry: Option<String>,
    pub tls_verify: bool,
    pub mode: CacheMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum CacheMode {
    /// Pull hits, push what is built.
    #[default]
    ReadWrite,
    /// Pull hits, never push (untrusted merge-request jobs).
    ReadOnly,
    /// Do not use the registry.
    Off,
}

/// Defaults for generated GitLab CI jobs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GitlabSettings {
    pub image: Option<String>,
    pub tags: Vec<String>,
    pub before_script: Vec<String>,
    pub variables: BTreeMap<String, String>,
    pub command: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct System {
    pub name: String,
    /// Workspace-relative inventory file or directory.
    pub inventory: Option<String>,
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Names of variables (system vars or inventory variables) whose values
    /// are never shown, logged or recorded (`secret_vars`).
    pub secret_vars: std::collections::BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "ref", rename_all = "snake_case")]
pub enum Parent {
    Scratch,
    Layer(Label),
    /// An external image pinned by digest (`name@sha256:...`).
    Image(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub label: Label,
    pub parent: Parent,
    pub setup: Vec<String>,
    /// Package entries, from `packages` then `packages_file`, in order.
    pub packages: Vec<String>,
    pub packages_file: Option<String>,
    pub package_command: Option<String>,
    pub scripts: Vec<String>,
    pub run: Vec<String>,
    pub inputs: Vec<String>,
    pub source: Option<String>,
    /// Relative to `source`.
    pub playbook: Option<String>,
    pub groups: Vec<String>,
    /// Workspace-relative role directories; defaults to `<source>/roles`.
    pub roles_path: Vec<String>,
    /// `chroot` or `buildah`; `None`: `[build] ansible_connection`.
    pub ansible_connection: Option<String>,
    /// Commands run in a fresh container from the committed image; a
    /// failing one fails the layer.
    pub tests: Vec<String>,
    /// Exports and pushes `build` performs once the layer is built.
    pub outputs: Vec<Output>,
    /// Commands run in the image booted in a virtual machine; a failing
    /// one fails the layer.
    pub boot_tests: Vec<String>,
    /// How the image boots.
    pub boot: BootSettings,
    /// The architectures it is built for: its own `architectures`, else its
    /// parent layer's, else `[build] architectures`.
    pub architectures: Vec<Arch>,
    /// Where its own `architectures` is, when it has one.
    #[serde(skip)]
    pub architectures_at: Option<Location>,
    /// Where the layer's table starts, for error messages.
    pub defined_at: Location,
}

/// How a layer's image boots: the netboot export and `boot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootSettings {
    /// The kernel version (`/boot/vmlinuz-VERSION`); `None`: the newest
    /// having an initramfs.
    pub kernel: Option<String>,
    /// Kernel command line arguments added to the ones layerbuild sets.
    pub cmdline: String,
    pub memory_mib: u32,
    /// How long a boot may take, from QEMU's start to the last test's end
    /// (with KVM; three times as long without).
    pub timeout_secs: u64,
}

impl Default for BootSettings {
    fn default() -> BootSettings {
        BootSettings {
            kernel: None,
            cmdline: String::new(),
            memory_mib: 1024,
            timeout_secs: 120,
        }
    }
}

/// A file format an image can be exported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormat {
    /// An OCI image layout in a tar archive (skopeo, podman load).
    OciArchive,
    /// A `docker save` archive (docker load).
    DockerArchive,
    /// An OCI image layout directory.
    OciDir,
    /// The root file system as a tar archive.
    RootfsTar,
    /// The root file system as a squashfs image (diskless boot).
    Squashfs,
    /// A directory to boot a diskless node from: kernel, initramfs,
    /// squashfs root, boot.json and an iPXE script.
    Netboot,
}

impl ExportFormat {
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::OciArchive => "oci-archive",
            ExportFormat::DockerArchive => "docker-archive",
            ExportFormat::OciDir => "oci-dir",
            ExportFormat::RootfsTar => "rootfs-tar",
            ExportFormat::Squashfs => "squashfs",
            ExportFormat::Netboot => "netboot",
        }
    }

    /// Holds a squashfs, so takes a compressor.
    pub fn has_squashfs(self) -> bool {
        matches!(self, ExportFormat::Squashfs | ExportFormat::Netboot)
    }
}

/// Something `build` does with a layer's image once it is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Output {
    /// Export to a file (or directory, for oci-dir).
    File {
        format: ExportFormat,
        /// Absolute.
        path: PathBuf,
        /// squashfs compressor.
        compression: Option<String>,
    },
    /// `buildah push` to this destination.
    Push {
        destination: String,
        tls_verify: bool,
    },
}

impl Output {
    /// Whether the path or destination names the architecture (`{arch}`).
    fn names_arch(&self) -> bool {
        match self {
            Output::File { path, .. } => path.to_string_lossy().contains("{arch}"),
            Output::Push { destination, .. } => destination.contains("{arch}"),
        }
    }

    /// `{arch}` in the path or destination replaced by `arch`'s name.
    fn set_arch(&mut self, arch: Arch) {
        match self {
            Output::File { path, .. } => {
                let p = path.to_string_lossy().replace("{arch}", arch.name());
                *path = PathBuf::from(p);
            }
            Output::Push { destination, .. } => {
                *destination = destination.replace("{arch}", arch.name());
            }
        }
    }
}

/// One parsed TOML file with its text, for locating errors.
struct SourceFile {
    path: PathBuf,
    display: PathBuf,
    text: String,
    /// Byte offset of each line's start (every layer records where it is
    /// defined: a scan from the top each time would be quadratic).
    line_starts: Vec<usize>,
}

impl SourceFile {
    fn new(path: PathBuf, display: PathBuf, text: String) -> SourceFile {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path,
            display,
            text,
            line_starts,
        }
    }

    fn at(&self, span: Range<usize>) -> Location {
        let offset = span.start.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let rest = &self.text[start..];
        let column = self
            .text
            .get(start..offset)
            .map_or(1, |s| s.chars().count() + 1);
        Location {
            file: Some(self.display.clone()),
            line: Some(line),
            column: Some(column),
            source_line: rest
                .lines()
                .next()
                .map(|l| mask_secret_values(&self.text, l)),
        }
    }
}

/// `line` of the Layerfile text `text` with the value of each variable
/// its `secret_vars` lists replaced by `*` (one per character, so that
/// an error's column still points at the right place). Works on the raw
/// text: an excerpt is shown when the file did not parse.
fn mask_secret_values(text: &str, line: &str) -> String {
    static LISTS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"secret_vars\s*=\s*\[([^\]]*)\]").expect("valid regex")
    });
    static NAMES: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#""([^"]+)"|'([^']+)'"#).expect("valid regex")
    });
    // A key, quoted or not, then `=` and a quoted value.
    static PAIRS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#"(?:^|[\s{,])(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*=\s*("(?:[^"\\]|\\.)*"?|'[^']*'?)"#,
        )
        .expect("valid regex")
    });
    let names: std::collections::BTreeSet<&str> = LISTS
        .captures_iter(text)
        .flat_map(|c| {
            NAMES
                .captures_iter(c.get(1).map_or("", |m| m.as_str()))
                .filter_map(|n| n.get(1).or_else(|| n.get(2)).map(|m| m.as_str()))
                .collect::<Vec<_>>()
        })
        .collect();
    if names.is_empty() {
        return line.to_string();
    }
    let mut out = line.to_string();
    for c in PAIRS.captures_iter(line) {
        let key = c.get(1).or_else(|| c.get(2)).or_else(|| c.get(3));
        let (Some(key), Some(value)) = (key, c.get(4)) else {
            continue;
        };
        if !names.contains(key.as_str()) {
            continue;
        }
        // Keep the quotes; mask what is between them.
        let v = value.as_str();
        let inner_start = value.start() + 1;
        let inner_end = if v.len() > 1 && (v.ends_with('"') || v.ends_with('\'')) {
            value.end() - 1
        } else {
            value.end()
        };
        if inner_start <= inner_end {
            let stars = "*".repeat(line[inner_start..inner_end].chars().count());
            out.replace_range(inner_start..inner_end, &stars);
        }
    }
    out
}

/// Finds `Layerfile.toml` in `start` or its nearest ancestor.
pub fn find_root(start: &Path) -> Result<PathBuf> {
    let start = start
        .canonicalize()
        .map_err(|e| Error::input(format!("{}: {e}", start.display())))?;
    for dir in start.ancestors() {
        if dir.join(LAYERFILE).is_file() {
            return Ok(dir.to_path_buf());
        }
    }
    Err(Error::input(format!(
        "no {LAYERFILE} found in {} or any parent directory",
        start.display()
    ))
    .with_hint("run layerbuild inside a workspace, or point at one with -C DIR"))
}

impl Workspace {
    /// Loads and validates the workspace rooted at `root`; the first problem
    /// found is the error.
    pub fn load(root: &Path) -> Result<Workspace> {
        let (ws, errors) = Workspace::check(root);
        match (ws, errors.into_iter().next()) {
            (_, Some(first)) => Err(first),
            (Some(ws), None) => Ok(ws),
            (None, None) => Err(Error::env("internal: no workspace and no error")),
        }
    }

    /// Validates the workspace rooted at `root`, collecting every problem
    /// instead of stopping at the first: per file, per system, per layer and,
    /// within a layer, per key. The errors come in the order [`Workspace::load`]
    /// meets them.
    ///
    /// The workspace is `None` only when nothing could be read (no root, an
    /// unreadable Layerfile, a TOML syntax error). When there are errors it is
    /// partial: systems and layers that failed are left out, and a layer whose
    /// parent failed is kept, so its parent may be missing from `layers`.
    /// Only `lint` uses a partial workspace.
    pub fn check(root: &Path) -> (Option<Workspace>, Vec<Error>) {
        let mut errs = vec![];
        let ws = check_into(root, None, &mut errs);
        (ws, errs)
    }

    /// [`Workspace::check`] with `text` as the Layerfile's content instead
    /// of reading `root/Layerfile.toml` (paths are still resolved against
    /// `root`). The entry point of the Layerfile fuzz target.
    pub fn check_text(root: &Path, text: &str) -> (Option<Workspace>, Vec<Error>) {
        let mut errs = vec![];
        let ws = check_into(root, Some(text), &mut errs);
        (ws, errs)
    }
    /// The model for `arch`: its layers are those built for it. An error
    /// when the workspace does not build for it.
    pub fn for_arch(&self, arch: Arch) -> Result<Workspace> {
        if !self.build.architectures.contains(&arch) {
            return Err(Error::input(format!(
                "this workspace does not build for {arch}; [build] architectures = [{}]",
                self.build
                    .architectures
                    .iter()
                    .map(|a| format!("\"{a}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .with_hint(format!(
                "add \"{arch}\" there, or name one of them with --arch"
            )));
        }
        let mut ws = self.clone();
        ws.arch = arch;
        let all = std::mem::take(&mut ws.layers)
            .into_iter()
            .chain(std::mem::take(&mut ws.other_arch_layers));
        for (label, mut layer) in all {
            match layer.architectures.contains(&arch) {
                true => {
                    for o in &mut layer.outputs {
                        o.set_arch(arch);
                    }
                    ws.layers.insert(label, layer)
                }
                false => ws.other_arch_layers.insert(label, layer),
            };
        }
        Ok(ws)
    }

    /// Picks the system named by `--system`, or the only one.
    /// `None` when the workspace declares no system at all.
    pub fn system(&self, requested: Option<&str>) -> Result<Option<&System>> {
        match requested {
            Some(name) => self.systems.get(name).map(Some).ok_or_else(|| {
                Error::input(format!("unknown system '{name}'")).with_hint(self.systems_hint())
            }),
            None => match self.systems.len() {
                0 => Ok(None),
                1 => Ok(self.systems.values().next()),
                _ => Err(Error::input(format!(
                    "{} declares several systems; choose one with --system",
                    LAYERFILE
                ))
                .with_hint(self.systems_hint())),
            },
        }
    }

    fn systems_hint(&self) -> String {
        if self.systems.is_empty() {
            format!("{LAYERFILE} declares no [systems.NAME] table")
        } else {
            format!(
                "declared systems: {}",
                self.systems.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.cache_dir.join("layerbuild.db")
    }

    /// Workspace-relative form of `path` for display.
    pub fn display_path(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// Keeps the value, or records the error and gives `None`.
fn keep<T>(errs: &mut Vec<Error>, r: Result<T>) -> Option<T> {
    r.map_err(|e| errs.push(e)).ok()
}

/// The body of [`Workspace::check`]: every problem goes to `errs` (in the
/// order of the Layerfile's sections, then systems, then layers).
fn check_into(root: &Path, text: Option<&str>, errs: &mut Vec<Error>) -> Option<Workspace> {
    let root = keep(
        errs,
        root.canonicalize()
            .map_err(|e| Error::input(format!("{}: {e}", root.display()))),
    )?;
    let main = match text {
        Some(text) => SourceFile::new(root.join(LAYERFILE), LAYERFILE.into(), text.to_string()),
        None => keep(errs, read_source(&root, &root.join(LAYERFILE)))?,
    };
    let parsed: Parsed<RawLayerfile> = parse_file(&main, errs)?;
    let raw = &parsed.top;
    let name = workspace_name(&root, &main, raw, errs);
    let allow_outside = allow_outside(&main, raw, errs);
    let cache_dir = match &raw.workspace.cache {
        Some(c) => {
            root.join(keep(errs, relative_path(&main, c, "cache")).unwrap_or("cache".into()))
        }
        None => root.join("cache"),
    };
    let build = build_settings(&root, &main, raw, errs);
    let cache = cache_settings(&main, raw, errs);
    let gitlab = gitlab_settings(raw);
    let publish_s3 = raw.publish.s3.as_ref().and_then(|s| {
        let bucket = s.bucket.get_ref().trim();
        if bucket.is_empty() || bucket.contains('/') {
            errs.push(Error::input_at(
                main.at(s.bucket.span()),
                format!("'{bucket}' is not a bucket name"),
            ));
            return None;
        }
        Some(S3Settings {
            endpoint: s
                .endpoint
                .as_ref()
                .map(|e| e.trim_end_matches('/').to_string()),
            bucket: bucket.to_string(),
            prefix: s
                .prefix
                .as_deref()
                .unwrap_or("")
                .trim_matches('/')
                .to_string(),
            region: s.region.clone(),
        })
    });
    let include = raw.workspace.include.clone();
    let tables = gather_tables(&root, &allow_outside, main, parsed, &include, errs);
    let systems = resolve_systems(&root, &allow_outside, &tables, errs);
    let mut layers = resolve_layers(&root, &allow_outside, tables, errs);
    if let Err(e) = check_output_paths(&root, &layers) {
        errs.push(e);
    }
    resolve_architectures(&mut layers, &build.architectures, errs);
    let arch = match Arch::host() {
        Some(h) if build.architectures.contains(&h) => h,
        _ => build.architectures[0],
    };
    Some(Workspace {
        layerfile: root.join(LAYERFILE),
        root,
        name,
        cache_dir,
        allow_outside,
        build,
        systems,
        layers,
        cache,
        gitlab,
        publish_s3,
        arch,
        other_arch_layers: BTreeMap::new(),
    })
}

/// Each layer's architectures: its own list (within `[build]
/// architectures` and its parent layer's), else its parent layer's, else
/// the workspace's. Boot tests run in an x86_64 virtual machine only.
fn resolve_architectures(
    layers: &mut BTreeMap<Label, Layer>,
    workspace: &[Arch],
    errs: &mut Vec<Error>,
) {
    // Parents first; a cycle (reported by the graph) stops the walk.
    let mut done: BTreeMap<Label, Vec<Arch>> = BTreeMap::new();
    let labels: Vec<Label> = layers.keys().cloned().collect();
    for label in labels {
        let mut chain = vec![label.clone()];
        while let Some(Parent::Layer(p)) = layers.get(chain.last().unwrap()).map(|l| &l.parent) {
            if done.contains_key(p) || chain.contains(p) || !layers.contains_key(p) {
                break;
            }
            chain.push(p.clone());
        }
        for l in chain.into_iter().rev() {
            if done.contains_key(&l) {
                continue;
            }
            let layer = &layers[&l];
            let inherited: Vec<Arch> = match &layer.parent {
                Parent::Layer(p) => done.get(p).cloned().unwrap_or_else(|| workspace.to_vec()),
                _ => workspace.to_vec(),
            };
            let own = &layer.architectures;
            let at = || {
                layer
                    .architectures_at
                    .clone()
                    .unwrap_or_else(|| layer.defined_at.clone())
            };
            let effective = if own.is_empty() {
                inherited
            } else if let Some(a) = own.iter().find(|a| !workspace.contains(a)) {
                errs.push(
                    Error::input_at(
                        at(),
                        format!("{l} is restricted to {a}, which [build] architectures does not name"),
                    )
                    .with_hint(format!(
                        "add \"{a}\" to [build] architectures, or restrict the layer to some of: {}",
                        names(workspace)
                    )),
                );
                own.clone()
            } else if let Some(a) = own.iter().find(|a| !inherited.contains(a)) {
                let Parent::Layer(p) = &layer.parent else {
                    unreachable!("only a parent layer narrows the inherited architectures")
                };
                errs.push(
                    Error::input_at(
                        at(),
                        format!("{l} is built for {a}, but its parent {p} is not"),
                    )
                    .with_hint(format!(
                        "a layer's architectures are some of its parent's: {}",
                        names(&inherited)
                    )),
                );
                own.clone()
            } else {
                own.clone()
            };
            if effective.len() > 1 && layer.outputs.iter().any(|o| !o.names_arch()) {
                errs.push(
                    Error::input_at(
                        layer.defined_at.clone(),
                        format!("{l} is built for {} and has an output without {{arch}}: each architecture's would overwrite the other's", names(&effective)),
                    )
                    .with_hint("put {arch} in each output's path or push destination (e.g. \"out/compute-{arch}.squashfs\"), or restrict the layer with architectures = [...]"),
                );
            }
            if !layer.boot_tests.is_empty()
                && let Some(a) = effective.iter().find(|a| **a != Arch::X86_64)
            {
                errs.push(
                    Error::input_at(
                        layer.defined_at.clone(),
                        format!("{l} has boot tests, which run in an x86_64 virtual machine only; it is also built for {a}"),
                    )
                    .with_hint("restrict the layer with architectures = [\"x86_64\"], or move the boot tests to an x86_64-only child"),
                );
            }
            done.insert(l, effective);
        }
    }
    for (label, archs) in done {
        if let Some(layer) = layers.get_mut(&label) {
            layer.architectures = archs;
        }
    }
}

fn names(archs: &[Arch]) -> String {
    archs
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `[workspace] name`, checked, or the root directory's name made usable.
fn workspace_name(
    root: &Path,
    main: &SourceFile,
    raw: &RawLayerfile,
    errs: &mut Vec<Error>,
) -> String {
    match &raw.workspace.name {
        Some(n) => {
            let v = n.get_ref();
            if v.len() > crate::label::SEGMENT_MAX || !crate::label::reference_component(v) {
                errs.push(
                    Error::input_at(
                        main.at(n.span()),
                        format!("workspace name '{v}' is not usable in image names"),
                    )
                    .with_hint("use at most 64 letters and digits, joined by '.', '_', '__' or '-' (e.g. \"site-a\")"),
                );
            }
            v.to_lowercase()
        }
        None => root
            .file_name()
            .map(|n| sanitize_name(&n.to_string_lossy()))
            .unwrap_or_else(|| "workspace".into()),
    }
}

/// `[workspace] allow_outside`: absolute directories that exist, canonical.
fn allow_outside(main: &SourceFile, raw: &RawLayerfile, errs: &mut Vec<Error>) -> Vec<PathBuf> {
    raw
        .workspace
        .allow_outside
        .iter()
        .filter_map(|a| {
            let at = main.at(a.span());
            let p = Path::new(a.get_ref());
            let r = if !p.is_absolute() {
                Err(Error::input_at(
                    at,
                    format!("allow_outside entry '{}' is not an absolute path", a.get_ref()),
                )
                .with_hint("name a directory outside the workspace by its absolute path, e.g. \"/opt/site-secrets\""))
            } else {
                p.canonicalize().map_err(|e| {
                    Error::input_at(at, format!("allow_outside entry '{}': {e}", a.get_ref()))
                        .with_hint("name an existing directory")
                })
            };
            keep(errs, r)
        })
        .collect()
}

/// `[build]`, checked, with defaults (and `SOURCE_DATE_EPOCH`).
fn build_settings(
    root: &Path,
    main: &SourceFile,
    raw: &RawLayerfile,
    errs: &mut Vec<Error>,
) -> BuildSettings {
    let epoch = keep(errs, source_date_epoch()).flatten();
    BuildSettings {
        isolation: match &raw.build.isolation {
            Some(i) if ISOLATIONS.contains(&i.get_ref().as_str()) => i.get_ref().clone(),
            Some(i) => {
                errs.push(
                    Error::input_at(
                        main.at(i.span()),
                        format!("unknown isolation '{}'", i.get_ref()),
                    )
                    .with_hint(format!("use one of: {}", ISOLATIONS.join(", "))),
                );
                "chroot".into()
            }
            None => "chroot".into(),
        },
        ansible_connection: raw
            .build
            .ansible_connection
            .as_ref()
            .and_then(|c| keep(errs, check_connection(main, c)))
            .unwrap_or_else(|| "mitogen".into()),
        jobs: match &raw.build.jobs {
            Some(j) if *j.get_ref() >= 1 => *j.get_ref() as usize,
            Some(j) => {
                errs.push(Error::input_at(
                    main.at(j.span()),
                    "jobs must be at least 1",
                ));
                default_jobs()
            }
            None => default_jobs(),
        },
        package_command: raw
            .build
            .package_command
            .as_ref()
            .map(|p| p.get_ref().clone())
            .unwrap_or_else(|| DEFAULT_PACKAGE_COMMAND.into()),
        storage_root: raw.build.storage_root.as_ref().map(|p| root.join(p)),
        storage_runroot: raw.build.storage_runroot.as_ref().map(|p| root.join(p)),
        storage_driver: raw
            .build
            .storage_driver
            .clone()
            .unwrap_or_else(|| "overlay".into()),
        reproducible: raw.build.reproducible.unwrap_or(false) || epoch.is_some(),
        source_date_epoch: epoch.unwrap_or(0),
        architectures: match &raw.build.architectures {
            None => vec![Arch::X86_64],
            Some(a) => match keep(errs, parse_architectures(main, a)) {
                Some(list) if !list.is_empty() => list,
                Some(_) => {
                    errs.push(
                        Error::input_at(main.at(a.span()), "[build] architectures is empty")
                            .with_hint("name at least one, e.g. [\"x86_64\"] (the default)"),
                    );
                    vec![Arch::X86_64]
                }
                None => vec![Arch::X86_64],
            },
        },
    }
}

/// An `architectures` list: known names, each once, in the order given.
fn parse_architectures(file: &SourceFile, raw: &Spanned<Vec<String>>) -> Result<Vec<Arch>> {
    let mut out: Vec<Arch> = vec![];
    for name in raw.get_ref() {
        let Some(a) = Arch::parse(name) else {
            return Err(Error::input_at(
                file.at(raw.span()),
                format!("unknown architecture '{name}'"),
            )
            .with_hint(format!("use some of: {}", crate::arch::KNOWN.join(", "))));
        };
        if out.contains(&a) {
            return Err(Error::input_at(
                file.at(raw.span()),
                format!("architecture '{name}' is named twice"),
            ));
        }
        out.push(a);
    }
    Ok(out)
}

/// `[cache]`, checked.
fn cache_settings(main: &SourceFile, raw: &RawLayerfile, errs: &mut Vec<Error>) -> CacheSettings {
    CacheSettings {
        registry: raw.cache.registry.as_ref().and_then(|r| {
            keep(
                errs,
                parse_registry(r.get_ref()).map_err(|e| {
                    Error::input_at(main.at(r.span()), e)
                        .with_hint("write host[:port]/path, e.g. registry.example.org/hpc/layers")
                }),
            )
        }),
        tls_verify: raw.cache.tls_verify.unwrap_or(true),
        mode: match &raw.cache.mode {
            None => CacheMode::ReadWrite,
            Some(m) => keep(
                errs,
                <CacheMode as clap::ValueEnum>::from_str(m.get_ref(), false).map_err(|_| {
                    Error::input_at(
                        main.at(m.span()),
                        format!("unknown cache mode '{}'", m.get_ref()),
                    )
                    .with_hint("use read-write, read-only or off")
                }),
            )
            .unwrap_or_default(),
        },
    }
}

/// `[ci.gitlab]`, with defaults.
fn gitlab_settings(raw: &RawLayerfile) -> GitlabSettings {
    GitlabSettings {
        image: raw.ci.gitlab.image.clone(),
        tags: raw.ci.gitlab.tags.clone(),
        before_script: raw.ci.gitlab.before_script.clone(),
        variables: raw.ci.gitlab.variables.clone(),
        command: raw
            .ci
            .gitlab
            .command
            .clone()
            .unwrap_or_else(|| "layerbuild".into()),
    }
}

/// The layer and system tables of the main file and its fragments, each
/// with the index of its file in `files`.
struct Tables {
    files: Vec<SourceFile>,
    layers: Vec<(usize, Spanned<String>, Option<RawLayer>)>,
    systems: Vec<(usize, Spanned<String>, RawSystem)>,
}

/// Gathers the tables of `main` and of the fragments its `include`
/// patterns name.
fn gather_tables(
    root: &Path,
    allow_outside: &[PathBuf],
    main: SourceFile,
    parsed: Parsed<RawLayerfile>,
    include: &[Spanned<String>],
    errs: &mut Vec<Error>,
) -> Tables {
    let mut t = Tables {
        files: vec![main],
        layers: parsed.layers.into_iter().map(|(k, v)| (0, k, v)).collect(),
        systems: parsed.systems.into_iter().map(|(k, v)| (0, k, v)).collect(),
    };
    for pattern in include {
        let Some(paths) = keep(
            errs,
            expand_include(root, allow_outside, &t.files[0], pattern),
        ) else {
            continue;
        };
        for path in paths {
            let Some(frag_file) = keep(errs, read_source(root, &path)) else {
                continue;
            };
            let Some(frag) = parse_file::<RawFragment>(&frag_file, errs) else {
                continue;
            };
            let idx = t.files.len();
            t.files.push(frag_file);
            t.layers
                .extend(frag.layers.into_iter().map(|(k, v)| (idx, k, v)));
            t.systems
                .extend(frag.systems.into_iter().map(|(k, v)| (idx, k, v)));
        }
    }
    t
}

/// The systems, each declared once, with an inventory that exists inside
/// the workspace and well-formed secret names.
fn resolve_systems(
    root: &Path,
    allow_outside: &[PathBuf],
    tables: &Tables,
    errs: &mut Vec<Error>,
) -> BTreeMap<String, System> {
    let mut systems = BTreeMap::new();
    let mut system_origin: BTreeMap<String, Location> = BTreeMap::new();
    for (idx, key, sys) in &tables.systems {
        let file = &tables.files[*idx];
        let loc = file.at(key.span());
        let name = key.get_ref().clone();
        if let Some(first) = system_origin.get(&name) {
            errs.push(
                Error::input_at(loc, format!("system '{name}' is declared twice"))
                    .with_hint(format!("it is first declared at {first}")),
            );
            continue;
        }
        system_origin.insert(name.clone(), loc.clone());
        if let Some(system) = resolve_system(root, allow_outside, file, loc, name, sys, errs) {
            systems.insert(system.name.clone(), system);
        }
    }
    systems
}

/// One `[systems.NAME]` table (declared at `loc`).
fn resolve_system(
    root: &Path,
    allow_outside: &[PathBuf],
    file: &SourceFile,
    loc: Location,
    name: String,
    sys: &RawSystem,
    errs: &mut Vec<Error>,
) -> Option<System> {
    let inventory = match &sys.inventory {
        Some(inv) => {
            let rel = keep(
                errs,
                relative_path(file, inv, "inventory")
                    .and_then(|rel| stays_inside(root, allow_outside, file, inv, "inventory", rel)),
            )?;
            if !root.join(&rel).exists() {
                errs.push(
                    Error::input_at(
                        file.at(inv.span()),
                        format!("inventory '{rel}' of system '{name}' does not exist"),
                    )
                    .with_hint("paths in a Layerfile are relative to the workspace root"),
                );
                return None;
            }
            Some(rel)
        }
        None => None,
    };
    let vars = keep(
        errs,
        sys.vars
            .iter()
            .map(|(k, v)| serde_json::to_value(v).map(|v| (k.clone(), v)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::input_at(loc, format!("system vars: {e}"))),
    )?;
    let secret_vars = sys
        .secret_vars
        .iter()
        .filter_map(|v| {
            let n = v.get_ref();
            let ok = !n.is_empty()
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !n.starts_with(|c: char| c.is_ascii_digit());
            if ok {
                Some(n.clone())
            } else {
                errs.push(
                    Error::input_at(
                        file.at(v.span()),
                        format!("secret_vars entry '{n}' of system '{name}' is not a variable name"),
                    )
                    .with_hint("list variable names (letters, digits, '_'), e.g. secret_vars = [\"munge_key\"]"),
                );
                None
            }
        })
        .collect();
    Some(System {
        name,
        inventory,
        vars,
        secret_vars,
    })
}

/// The layers: labels first, so parents can be checked against the full
/// set, then each table resolved.
fn resolve_layers(
    root: &Path,
    allow_outside: &[PathBuf],
    tables: Tables,
    errs: &mut Vec<Error>,
) -> BTreeMap<Label, Layer> {
    let (labels, keys) = layer_labels(&tables, errs);
    let mut layers = BTreeMap::new();
    for ((idx, key, raw_layer), label) in tables.layers.into_iter().zip(keys) {
        let (Some(label), Some(raw_layer)) = (label, raw_layer) else {
            continue;
        };
        let file = &tables.files[idx];
        if let Some(layer) = resolve_layer(
            root,
            allow_outside,
            file,
            label.clone(),
            key.span(),
            raw_layer,
            &labels,
            errs,
        ) {
            layers.insert(label, layer);
        }
    }
    layers
}

/// Every layer's label, where it is declared; and per table its label, or
/// `None` for a table that is not resolved (a bad or repeated label).
fn layer_labels(
    tables: &Tables,
    errs: &mut Vec<Error>,
) -> (BTreeMap<Label, Location>, Vec<Option<Label>>) {
    let mut labels: BTreeMap<Label, Location> = BTreeMap::new();
    let mut keys: Vec<Option<Label>> = vec![];
    for (idx, key, _) in &tables.layers {
        let file = &tables.files[*idx];
        let label = keep(
            errs,
            Label::from_key(key.get_ref()).map_err(|e| {
                Error::input_at(file.at(key.span()), e)
                    .with_hint("declare layers as [layers.\"IMAGE_TYPE/LAYER\"], e.g. [layers.\"compute/slurm\"]")
            }),
        );
        let label = label.filter(|label| match labels.get(label) {
            Some(first) => {
                errs.push(
                    Error::input_at(
                        file.at(key.span()),
                        format!("layer {label} is declared twice"),
                    )
                    .with_hint(format!("it is first declared at {first}")),
                );
                false
            }
            None => true,
        });
        if let Some(label) = &label {
            labels.insert(label.clone(), file.at(key.span()));
        }
        keys.push(label);
    }
    (labels, keys)
}

/// Checks a registry location: `host[:port]/path`, lower case, no scheme or tag.
pub fn parse_registry(r: &str) -> std::result::Result<String, String> {
    let r = r.trim().trim_end_matches('/');
    let r = r.strip_prefix("docker://").unwrap_or(r);
    if r.is_empty() || r.contains("://") || r.contains('@') || r.chars().any(char::is_whitespace) {
        return Err(format!(
            "registry '{r}' is not of the form host[:port]/path"
        ));
    }
    let last = r.rsplit('/').next().unwrap_or(r);
    if r.contains('/') && last.contains(':') {
        return Err(format!(
            "registry '{r}' must not carry a tag: tags are layer digests"
        ));
    }
    Ok(r.to_string())
}

fn check_connection(file: &SourceFile, c: &Spanned<String>) -> Result<String> {
    if ANSIBLE_CONNECTIONS.contains(&c.get_ref().as_str()) {
        return Ok(c.get_ref().clone());
    }
    Err(Error::input_at(
        file.at(c.span()),
        format!("unknown ansible_connection '{}'", c.get_ref()),
    )
    .with_hint(
        "use chroot (the default: the mounted root, fastest) or buildah (containers.podman.buildah)",
    ))
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org), if set.
fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            Error::input(format!(
                "SOURCE_DATE_EPOCH '{v}' is not a number of seconds"
            ))
            .with_hint("set it to a Unix time, e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)")
        }),
    }
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

pub(crate) fn sanitize_name(s: &str) -> String {
    let s: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut s = s
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if !crate::label::reference_component(&s) {
        // Separators an image name does not allow together ("..", "_-"):
        // each run of them becomes one '-'.
        let mut out = String::new();
        for c in s.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        s = out;
    }
    s.truncate(crate::label::SEGMENT_MAX);
    let s = s.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if s.is_empty() {
        "workspace".into()
    } else {
        s.to_string()
    }
}

fn read_source(root: &Path, path: &Path) -> Result<SourceFile> {
    let display = path.strip_prefix(root).unwrap_or(path).to_path_buf();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::input_at(Location::file(&display), format!("cannot read: {e}")))?;
    Ok(SourceFile::new(path.to_path_buf(), display, text))
}

/// A parsed Layerfile or fragment: its other tables, and its layers and
/// systems deserialised one table at a time, so an unknown key in one layer
/// does not hide the problems of the others.
struct Parsed<T> {
    top: T,
    /// `None` for a table that failed to deserialise: its label still
    /// counts, so its children are not told their parent is unknown.
    layers: Vec<(Spanned<String>, Option<RawLayer>)>,
    systems: Vec<(Spanned<String>, RawSystem)>,
}

/// Parses `file`; every serde error goes to `errs`. `None` only on a TOML
/// syntax error, which leaves nothing to check.
fn parse_file<T: serde::de::DeserializeOwned + Default>(
    file: &SourceFile,
    errs: &mut Vec<Error>,
) -> Option<Parsed<T>> {
    use toml::de::{DeTable, DeValue, ValueDeserializer};

    let doc = match DeTable::parse(&file.text) {
        Ok(doc) => doc,
        Err(e) => {
            errs.push(toml_error(file, &e));
            return None;
        }
    };
    let span = doc.span();
    let mut top = doc.into_inner();
    // A `layers` or `systems` that is not a table stays in `top`, whose
    // deserialisation then reports the type error.
    let mut take = |name: &str| match top.get(name) {
        Some(v) if v.get_ref().is_table() => match top.remove(name).map(|v| v.into_inner()) {
            Some(DeValue::Table(t)) => t.into_iter().collect::<Vec<_>>(),
            _ => vec![],
        },
        _ => vec![],
    };
    let raw_layers = take("layers");
    let raw_systems = take("systems");

    fn each<T: serde::de::DeserializeOwned>(
        file: &SourceFile,
        tables: Vec<(Spanned<toml::de::DeString<'_>>, Spanned<DeValue<'_>>)>,
        errs: &mut Vec<Error>,
    ) -> Vec<(Spanned<String>, Option<T>)> {
        let mut out = vec![];
        for (k, v) in tables {
            let t = T::deserialize(ValueDeserializer::from(v))
                .map_err(|e| errs.push(toml_error(file, &e)))
                .ok();
            out.push((Spanned::new(k.span(), k.get_ref().to_string()), t));
        }
        out
    }
    let layers = each(file, raw_layers, errs);
    let systems = each(file, raw_systems, errs)
        .into_iter()
        .filter_map(|(k, s)| Some((k, s?)))
        .collect();
    let top = match T::deserialize(ValueDeserializer::from(Spanned::new(
        span,
        DeValue::Table(top),
    ))) {
        Ok(t) => t,
        Err(e) => {
            errs.push(toml_error(file, &e));
            T::default()
        }
    };
    Some(Parsed {
        top,
        layers,
        systems,
    })
}

fn toml_error(file: &SourceFile, e: &toml::de::Error) -> Error {
    let loc = match e.span() {
        Some(span) => file.at(span),
        None => Location::file(&file.display),
    };
    let message = e.message().trim().to_string();
    let hint = if message.contains("unknown field") {
        "check the key's spelling against the Layerfile reference in README.md"
    } else if message.contains("missing field") {
        "add the missing key; see the Layerfile reference in README.md"
    } else {
        "fix the TOML syntax; see the Layerfile reference in README.md"
    };
    Error::input_at(loc, message).with_hint(hint)
}

fn expand_include(
    root: &Path,
    allow: &[PathBuf],
    main: &SourceFile,
    pattern: &Spanned<String>,
) -> Result<Vec<PathBuf>> {
    let rel = relative_path(main, pattern, "include")?;
    let full = root.join(&rel);
    let full = full.to_string_lossy();
    let paths = glob::glob(&full).map_err(|e| {
        Error::input_at(main.at(pattern.span()), format!("bad include pattern: {e}"))
    })?;
    let mut out = vec![];
    for p in paths {
        let p = p.map_err(|e| Error::env(e.to_string()))?;
        if let Ok(inner) = p.strip_prefix(root) {
            stays_inside(
                root,
                allow,
                main,
                pattern,
                "include",
                inner.to_string_lossy().into_owned(),
            )?;
        }
        if p != main.path {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(Error::input_at(
            main.at(pattern.span()),
            format!("include pattern '{rel}' matches no file"),
        )
        .with_hint("remove the pattern or add the fragment files it should match"));
    }
    out.sort();
    Ok(out)
}

/// Checks a Layerfile path: relative, normalised, no `..` above the root.
/// Absolute paths would make digests depend on where the workspace lives.
fn relative_path(file: &SourceFile, value: &Spanned<String>, what: &str) -> Result<String> {
    let v = value.get_ref();
    let p = Path::new(v);
    let bad = |msg: String| Error::input_at(file.at(value.span()), msg);
    if v.is_empty() {
        return Err(bad(format!("{what} path is empty")));
    }
    if p.is_absolute() {
        return Err(bad(format!("{what} path '{v}' is absolute"))
            .with_hint("use a path relative to the workspace root, so digests do not depend on where the workspace lives"));
    }
    let mut parts: Vec<String> = vec![];
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(bad(format!("{what} path '{v}' leaves the workspace"))
                        .with_hint("keep every input inside the workspace so a fresh clone sees the same files"));
                }
            }
            _ => {
                return Err(bad(format!(
                    "{what} path '{v}' is not a plain relative path"
                )));
            }
        }
    }
    if parts.is_empty() {
        return Ok(".".into());
    }
    Ok(parts.join("/"))
}

/// Checks that the workspace path `rel` (lexically inside) does not lead
/// out of the workspace through a symbolic link, unless into an
/// `allow_outside` directory. A path that does not exist is left to the
/// existence checks. Gives `rel` back.
fn stays_inside(
    root: &Path,
    allow_outside: &[PathBuf],
    file: &SourceFile,
    value: &Spanned<String>,
    what: &str,
    rel: String,
) -> Result<String> {
    let Ok(real) = root.join(&rel).canonicalize() else {
        return Ok(rel);
    };
    if real.starts_with(root) || allow_outside.iter().any(|a| real.starts_with(a)) {
        return Ok(rel);
    }
    let dir = if real.is_dir() {
        real.clone()
    } else {
        real.parent()
            .map_or_else(|| real.clone(), Path::to_path_buf)
    };
    Err(Error::input_at(
        file.at(value.span()),
        format!(
            "{what} path '{rel}' leads out of the workspace, to {}, through a symbolic link",
            real.display()
        ),
    )
    .with_hint(format!(
        "builds would depend on files a fresh clone does not have; copy them into the workspace, or allow the directory explicitly with [workspace] allow_outside = [\"{}\"]",
        dir.display()
    )))
}

/// A layer's parent: `scratch`, a declared label, or an image pinned by digest.
fn resolve_parent(
    file: &SourceFile,
    label: &Label,
    raw: &Spanned<String>,
    labels: &BTreeMap<Label, Location>,
) -> Result<Parent> {
    let parent_value = raw.get_ref().trim();
    let parent_loc = file.at(raw.span());
    if parent_value == "scratch" {
        Ok(Parent::Scratch)
    } else if parent_value.starts_with("//") {
        let p = Label::parse(parent_value).map_err(|e| Error::input_at(parent_loc.clone(), e))?;
        if !labels.contains_key(&p) {
            let known: Vec<String> = labels.keys().map(|l| l.to_string()).collect();
            return Err(Error::input_at(
                parent_loc,
                format!("layer {label} has unknown parent {p}"),
            )
            .with_hint(format!(
                "declare [layers.\"{}/{}\"] or use one of: scratch, {}",
                p.image_type(),
                p.layer(),
                known.join(", ")
            )));
        }
        if &p == label {
            return Err(
                Error::input_at(parent_loc, format!("layer {label} is its own parent")).with_hint(
                    "a layer's parent must be another layer, scratch, or a pinned image",
                ),
            );
        }
        Ok(Parent::Layer(p))
    } else if parent_value.contains("@sha256:") {
        pinned_image(parent_value).map_err(|why| {
            Error::input_at(
                parent_loc,
                format!("parent '{parent_value}' of {label} is not a valid pinned image: {why}"),
            )
            .with_hint("write it as \"registry/name@sha256:<64 lower-case hex digits>\", e.g. from `skopeo inspect --format '{{.Digest}}' docker://registry/name:tag`")
        })?;
        Ok(Parent::Image(parent_value.to_string()))
    } else {
        Err(Error::input_at(
            parent_loc,
            format!("parent '{parent_value}' of {label} is neither scratch, a label, nor an image pinned by digest"),
        )
        .with_hint("write \"scratch\", a label like \"//base/os\", or an image as \"registry/name@sha256:<digest>\" (a tag can move, so it cannot be cached safely)"))
    }
}

/// Checks `NAME@sha256:DIGEST` the way an image reference is parsed: a
/// name of lower-case path components (the first may be a registry host
/// with a port) and a digest of 64 lower-case hex digits.
fn pinned_image(v: &str) -> std::result::Result<(), String> {
    let (name, digest) = v
        .split_once("@sha256:")
        .ok_or_else(|| "no '@sha256:' digest".to_string())?;
    if digest.len() != 64
        || !digest
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!(
            "the digest '{digest}' is not 64 lower-case hex digits"
        ));
    }
    if name.is_empty() || name.len() > 255 {
        return Err("the image name before '@' is empty or longer than 255 characters".into());
    }
    let mut parts = name.split('/').peekable();
    let first = parts.next().unwrap_or_default();
    let host = parts.peek().is_some()
        && (first.contains('.') || first.contains(':') || first == "localhost");
    if host {
        let (h, port) = first.split_once(':').unwrap_or((first, ""));
        let host_ok = !h.is_empty()
            && h.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !host_ok
            || !(first.len() == h.len()
                || (!port.is_empty() && port.bytes().all(|c| c.is_ascii_digit())))
        {
            return Err(format!("'{first}' is not a registry host[:port]"));
        }
    }
    for c in std::iter::once(first).filter(|_| !host).chain(parts) {
        if !crate::label::reference_component(c) || c.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "'{c}' is not a lower-case name component (letters and digits joined by '.', '_', '__' or '-')"
            ));
        }
    }
    Ok(())
}

/// Resolves one layer table. Each key is checked on its own and every
/// problem goes to `errs`; `None` when there was any.
#[allow(clippy::too_many_arguments)]
fn resolve_layer(
    root: &Path,
    allow_outside: &[PathBuf],
    file: &SourceFile,
    label: Label,
    key_span: Range<usize>,
    raw: RawLayer,
    labels: &BTreeMap<Label, Location>,
    errs: &mut Vec<Error>,
) -> Option<Layer> {
    let errs_before = errs.len();
    let defined_at = file.at(key_span);
    let parent = keep(errs, resolve_parent(file, &label, &raw.parent, labels));
    let check = LayerCheck {
        root,
        allow_outside,
        file,
        label: &label,
    };
    let source = raw
        .source
        .as_ref()
        .and_then(|s| keep(errs, check.must_exist(s, "source", true, false)));
    let playbook = match &raw.playbook {
        // A bad source was reported above; the playbook cannot be looked for.
        Some(_) if raw.source.is_some() && source.is_none() => None,
        Some(pb) => keep(errs, check.playbook(pb, source.as_deref())),
        None => None,
    };
    let roles_path = check.roles_path(&raw, source.as_deref(), errs);
    let scripts = raw
        .scripts
        .iter()
        .filter_map(|s| keep(errs, check.must_exist(s, "script", false, true)))
        .collect();
    let inputs = raw
        .inputs
        .iter()
        .filter_map(|s| keep(errs, check.must_exist(s, "input", true, true)))
        .collect();
    let (packages, packages_file) = check.packages(&raw, &defined_at, errs);
    let ansible_connection = raw
        .ansible_connection
        .as_ref()
        .and_then(|c| keep(errs, check_connection(file, c)));
    let outputs: Vec<Output> = raw
        .outputs
        .iter()
        .filter_map(|o| keep(errs, resolve_output(root, file, &label, o)))
        .collect();
    if raw.tests.iter().any(|t| t.trim().is_empty()) {
        errs.push(
            Error::input_at(
                defined_at.clone(),
                format!("{label} has an empty test command"),
            )
            .with_hint("each tests entry is a shell command run in the built image"),
        );
    }
    if raw.boot_tests.iter().any(|t| t.trim().is_empty()) {
        errs.push(
            Error::input_at(
                defined_at.clone(),
                format!("{label} has an empty boot test command"),
            )
            .with_hint("each boot_tests entry is a shell command run in the booted image"),
        );
    }
    let boot = match &raw.boot {
        None => BootSettings::default(),
        Some(b) => keep(errs, resolve_boot(file, &label, b)).unwrap_or_default(),
    };
    let architectures = match &raw.architectures {
        None => vec![],
        Some(a) => match keep(errs, parse_architectures(file, a)) {
            Some(list) if list.is_empty() => {
                errs.push(
                    Error::input_at(
                        file.at(a.span()),
                        format!("{label}: architectures is empty"),
                    )
                    .with_hint("leave it out to build the layer for its parent's architectures"),
                );
                vec![]
            }
            Some(list) => list,
            None => vec![],
        },
    };
    if errs.len() > errs_before {
        return None;
    }
    Some(Layer {
        label,
        parent: parent?,
        setup: raw.setup,
        packages,
        packages_file,
        package_command: raw.package_command,
        scripts,
        run: raw.run,
        inputs,
        source,
        playbook,
        groups: raw.groups,
        ansible_connection,
        roles_path,
        tests: raw.tests,
        outputs,
        boot_tests: raw.boot_tests,
        boot,
        architectures,
        architectures_at: raw.architectures.as_ref().map(|a| file.at(a.span())),
        defined_at,
    })
}

fn resolve_boot(
    file: &SourceFile,
    label: &Label,
    raw: &Spanned<layerfile::RawBoot>,
) -> Result<BootSettings> {
    let b = raw.get_ref();
    let at = || file.at(raw.span());
    let d = BootSettings::default();
    let memory_mib = b.memory_mib.unwrap_or(d.memory_mib);
    if memory_mib < 128 {
        return Err(Error::input_at(
            at(),
            format!("boot memory_mib of {label} is {memory_mib}: a kernel needs at least 128"),
        ));
    }
    let timeout_secs = b.timeout_secs.unwrap_or(d.timeout_secs);
    if timeout_secs == 0 {
        return Err(Error::input_at(
            at(),
            format!("boot timeout_secs of {label} is 0"),
        ));
    }
    if let Some(k) = &b.kernel
        && (k.is_empty() || k.contains('/') || k.chars().any(char::is_whitespace))
    {
        return Err(Error::input_at(
            at(),
            format!("boot kernel of {label} is '{k}': give a version, as in /boot/vmlinuz-VERSION"),
        ));
    }
    Ok(BootSettings {
        kernel: b.kernel.clone(),
        cmdline: b.cmdline.clone().unwrap_or_default().trim().to_string(),
        memory_mib,
        timeout_secs,
    })
}

/// The checks of the paths one layer table names.
struct LayerCheck<'a> {
    root: &'a Path,
    allow_outside: &'a [PathBuf],
    file: &'a SourceFile,
    label: &'a Label,
}

impl LayerCheck<'_> {
    /// `v` as a workspace-relative path that stays inside and is an
    /// existing directory (`dir_ok`) or file (`file_ok`).
    fn must_exist(
        &self,
        v: &Spanned<String>,
        what: &str,
        dir_ok: bool,
        file_ok: bool,
    ) -> Result<String> {
        let (file, label) = (self.file, self.label);
        let rel = relative_path(file, v, what)?;
        let rel = stays_inside(self.root, self.allow_outside, file, v, what, rel)?;
        let full = self.root.join(&rel);
        let ok = (dir_ok && full.is_dir()) || (file_ok && full.is_file());
        if !ok {
            let kind = match (dir_ok, file_ok) {
                (true, false) => "directory",
                (false, true) => "file",
                _ => "file or directory",
            };
            return Err(Error::input_at(
                file.at(v.span()),
                format!("{what} '{rel}' of {label} is not an existing {kind}"),
            )
            .with_hint("paths in a Layerfile are relative to the workspace root"));
        }
        Ok(rel)
    }

    /// The playbook `pb`, relative to the (valid) `source`.
    fn playbook(&self, pb: &Spanned<String>, source: Option<&str>) -> Result<String> {
        let (root, file, label) = (self.root, self.file, self.label);
        let Some(src) = source else {
            return Err(Error::input_at(
                file.at(pb.span()),
                format!("{label} names a playbook but no source directory"),
            )
            .with_hint("add source = \"DIR\": the directory holding the playbook and its roles/"));
        };
        let rel = relative_path(file, pb, "playbook")?;
        let joined = if src == "." {
            rel.clone()
        } else {
            format!("{src}/{rel}")
        };
        stays_inside(root, self.allow_outside, file, pb, "playbook", joined)?;
        let full = root.join(src).join(&rel);
        if !full.is_file() {
            let err = Error::input_at(
                file.at(pb.span()),
                format!("playbook '{src}/{rel}' of {label} does not exist"),
            );
            // A submodule not checked out: an empty directory.
            let empty = std::fs::read_dir(root.join(src)).is_ok_and(|mut d| d.next().is_none());
            return Err(if empty {
                err.with_hint(format!(
                    "'{src}' is empty: if it is a git submodule, check it out with `git submodule update --init --recursive`"
                ))
            } else {
                err.with_hint("the playbook path is relative to the layer's source directory")
            });
        }
        Ok(rel)
    }

    /// `roles_path`, checked, or `<source>/roles`.
    fn roles_path(
        &self,
        raw: &RawLayer,
        source: Option<&str>,
        errs: &mut Vec<Error>,
    ) -> Vec<String> {
        if raw.roles_path.is_empty() {
            source
                .iter()
                .map(|s| {
                    if *s == "." {
                        "roles".to_string()
                    } else {
                        format!("{s}/roles")
                    }
                })
                .collect()
        } else {
            raw.roles_path
                .iter()
                .filter_map(|r| keep(errs, self.must_exist(r, "roles_path entry", true, false)))
                .collect()
        }
    }

    /// The package entries (`packages`, then those of `packages_file`),
    /// each checked, and the packages file.
    fn packages(
        &self,
        raw: &RawLayer,
        defined_at: &Location,
        errs: &mut Vec<Error>,
    ) -> (Vec<String>, Option<String>) {
        let mut packages = raw.packages.clone();
        let packages_file = raw.packages_file.as_ref().and_then(|pf| {
            let rel = keep(errs, self.must_exist(pf, "packages_file", false, true))?;
            let text = keep(
                errs,
                std::fs::read_to_string(self.root.join(&rel)).map_err(|e| {
                    Error::input_at(self.file.at(pf.span()), format!("cannot read '{rel}': {e}"))
                }),
            )?;
            packages.extend(parse_package_list(&text));
            Some(rel)
        });
        for p in &packages {
            if p.trim().is_empty() || p.chars().any(char::is_whitespace) {
                errs.push(
                    Error::input_at(
                        defined_at.clone(),
                        format!(
                            "package entry '{p}' of {} is empty or contains whitespace",
                            self.label
                        ),
                    )
                    .with_hint("write one package per list entry (or per line in packages_file)"),
                );
            }
        }
        (packages, packages_file)
    }
}

fn resolve_output(
    root: &Path,
    file: &SourceFile,
    label: &Label,
    raw: &Spanned<RawOutput>,
) -> Result<Output> {
    let at = file.at(raw.span());
    let o = raw.get_ref();
    match (&o.push, &o.format) {
        (Some(dest), None) => {
            if o.path.is_some() || o.compression.is_some() {
                return Err(Error::input_at(
                    at,
                    format!("an output of {label} has both push and path/compression"),
                )
                .with_hint("declare a push and an export as two [[outputs]] tables"));
            }
            let d = dest.get_ref().trim();
            if d.is_empty() {
                return Err(Error::input_at(file.at(dest.span()), "push destination is empty"));
            }
            Ok(Output::Push {
                destination: d.to_string(),
                tls_verify: o.tls_verify.unwrap_or(true),
            })
        }
        (None, Some(format)) => {
            if o.tls_verify.is_some() {
                return Err(Error::input_at(
                    at,
                    format!("tls_verify applies to push outputs only ({label})"),
                ));
            }
            let fmt = <ExportFormat as clap::ValueEnum>::from_str(format.get_ref(), false)
                .map_err(|_| {
                    Error::input_at(
                        file.at(format.span()),
                        format!("unknown output format '{}'", format.get_ref()),
                    )
                    .with_hint(
                        "use oci-archive, docker-archive, oci-dir, rootfs-tar, squashfs or netboot",
                    )
                })?;
            let Some(path) = &o.path else {
                return Err(Error::input_at(
                    at,
                    format!("the {} output of {label} has no path", fmt.name()),
                )
                .with_hint("add path = \"out/NAME\" (relative to the workspace root)"));
            };
            let p = path.get_ref();
            if p.trim().is_empty() {
                return Err(Error::input_at(file.at(path.span()), "output path is empty"));
            }
            let compression = match &o.compression {
                None => None,
                Some(c) if !fmt.has_squashfs() => {
                    return Err(Error::input_at(
                        file.at(c.span()),
                        format!("compression applies to squashfs outputs only, not {}", fmt.name()),
                    ));
                }
                Some(c) if SQUASHFS_COMPRESSORS.contains(&c.get_ref().as_str()) => {
                    Some(c.get_ref().clone())
                }
                Some(c) => {
                    return Err(Error::input_at(
                        file.at(c.span()),
                        format!("unknown squashfs compression '{}'", c.get_ref()),
                    )
                    .with_hint(format!("use one of: {}", SQUASHFS_COMPRESSORS.join(", "))));
                }
            };
            Ok(Output::File {
                format: fmt,
                path: root.join(p),
                compression,
            })
        }
        _ => Err(Error::input_at(
            at,
            format!("an output of {label} must have either format (with path) or push"),
        )
        .with_hint("e.g. { format = \"squashfs\", path = \"out/compute.squashfs\" } or { push = \"docker://registry.example.org/hpc/compute\" }")),
    }
}

/// An export written inside a directory some layer reads would change that
/// layer's digest on every build.
fn check_output_paths(root: &Path, layers: &BTreeMap<Label, Layer>) -> Result<()> {
    for layer in layers.values() {
        for out in &layer.outputs {
            let Output::File { path, .. } = out else {
                continue;
            };
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            for other in layers.values() {
                let read = other
                    .source
                    .iter()
                    .chain(&other.inputs)
                    .chain(&other.roles_path)
                    .chain(&other.scripts);
                for r in read {
                    // A source of "." is the whole workspace: .gitignore decides there.
                    if r != "." && rel.starts_with(r) {
                        return Err(Error::input_at(
                            layer.defined_at.clone(),
                            format!(
                                "output {} of {} lies inside '{r}', an input of {}",
                                rel.display(),
                                layer.label,
                                other.label
                            ),
                        )
                        .with_hint("write exports outside every source and inputs directory, e.g. under out/ (and add it to .gitignore)"));
                    }
                }
            }
        }
    }
    Ok(())
}

/// One package per line; `#` starts a comment.
pub fn parse_package_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_secret_values_in_excerpts() {
        let text = "[systems.a]\nvars = { key = \"s3c\\\"ret\", other = \"shown\" ,, }\nsecret_vars = [\"key\", 'pw']\n";
        let line = text.lines().nth(1).unwrap();
        let masked = mask_secret_values(text, line);
        assert_eq!(
            masked,
            "vars = { key = \"********\", other = \"shown\" ,, }"
        );
        assert_eq!(masked.chars().count(), line.chars().count());
        assert_eq!(mask_secret_values(text, "pw = 'x y'"), "pw = '***'");
        assert_eq!(
            mask_secret_values(text, "\"key\" = \"abc"),
            "\"key\" = \"***"
        );
        assert_eq!(
            mask_secret_values("vars = { key = \"v\" }", "key = \"v\""),
            "key = \"v\""
        );
    }

    #[test]
    fn locations_from_the_line_table_match_a_scan_from_the_top() {
        let text = "[a]\nx = 1\n\n[layers.\"é/x\"]\nparent = \"scratch\"\n";
        let f = SourceFile::new("/w/L".into(), "L".into(), text.to_string());
        for offset in (0..=text.len()).filter(|&o| text.is_char_boundary(o)) {
            let a = f.at(offset..offset);
            let b = Location::at_offset("L", text, offset);
            assert_eq!(
                (a.line, a.column, &a.source_line, &a.file),
                (b.line, b.column, &b.source_line, &b.file),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn package_lists_skip_comments_and_blanks() {
        assert_eq!(
            parse_package_list("# base\nchrony\n\n nfs-common # mounts\n"),
            vec!["chrony", "nfs-common"]
        );
    }

    #[test]
    fn check_collects_every_problem_and_load_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LAYERFILE),
            "[layers.\"a/one\"]\nparent = \"//a/nope\"\n\n\
             [layers.\"a/two\"]\nparent = \"scratch\"\nscripts = [\"gone.sh\", \"also-gone.sh\"]\n\n\
             [layers.\"a/three\"]\nparent = \"scratch\"\nplaybok = \"x.yml\"\n\n\
             [layers.\"a/four\"]\nparent = \"scratch\"\nsetp = []\n\n\
             [layers.\"a/five\"]\nparent = \"//a/two\"\n",
        )
        .unwrap();
        let (ws, errors) = Workspace::check(dir.path());
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 5, "{shown:#?}");
        for (needle, line) in [
            ("unknown field `setp`", ":14:"),
            ("unknown field `playbok`", ":10:"),
            ("unknown parent //a/nope", ":2:"),
            ("script 'gone.sh'", ":6:"),
            ("script 'also-gone.sh'", ":6:"),
        ] {
            assert!(
                shown.iter().any(|s| s.contains(needle) && s.contains(line)),
                "{needle} at {line} in {shown:#?}"
            );
        }
        // The layers that validated are kept, even one whose parent failed.
        let ws = ws.unwrap();
        let kept: Vec<String> = ws.layers.keys().map(|l| l.to_string()).collect();
        assert_eq!(kept, vec!["//a/five"]);

        let first = Workspace::load(dir.path()).unwrap_err().to_string();
        assert_eq!(first, shown[0]);
    }

    #[test]
    fn names_are_sanitised_for_image_references() {
        assert_eq!(sanitize_name("My Workspace!"), "my-workspace");
        assert_eq!(sanitize_name("///"), "workspace");
        // (see also `masks_secret_values_in_excerpts`)
        // A directory's name becomes an image-name component as it is when
        // it can, with each run of separators that cannot joined by '-'.
        assert_eq!(sanitize_name("site_a.b"), "site_a.b");
        assert_eq!(sanitize_name("site..a"), "site-a");
        assert_eq!(sanitize_name("a_-b"), "a-b");
        assert_eq!(sanitize_name(&"x".repeat(100)), "x".repeat(64));
        for n in ["a..b", "a__-b", "x.-", "-.-", &"ab-".repeat(40)] {
            let s = sanitize_name(n);
            assert!(
                crate::label::reference_component(&s) && s.len() <= 64,
                "{n} -> {s}"
            );
        }
    }
}
