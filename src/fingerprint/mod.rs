//! What goes into a layer's digest.
//!
//! A [`Manifest`] is a serialisable record of every input of a layer: the
//! parent's digest (so a change anywhere above changes everything below),
//! the layer's definition, its packages entry by entry, every file of its
//! source directory and of the roles its play uses, its scripts and inputs,
//! the system's inventory and vars, and a format version. The digest is
//! blake3 over the manifest's canonical JSON (struct fields in declaration
//! order, maps sorted). The whole manifest is kept beside the digest so a
//! rebuild can be explained as a diff of two manifests.
//!
//! I/O: reads workspace files, every access through an [`Observer`] (via
//! [`files`], [`ansible`], [`inventory`], [`vars`]), and the environment
//! (`HOME` and the variables ansible.cfg paths name); warns on stderr of a link out of the
//! workspace that a whole-workspace fallback cannot count. It never spawns a
//! process and never opens SQLite: the caches are stored by the cache module,
//! behind [`session`]'s narrow stores.

pub mod ansible;
pub mod files;
pub mod inventory;
pub mod jinja;
pub mod observe;
pub mod reads;
pub mod session;
pub mod stat;
pub mod statcache;
pub mod vars;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::label::Label;
use crate::workspace::{Layer, Parent, System, Workspace};
use files::{FileHash, FileIndex, LinkTarget};
use observe::Observer;

/// Bump when the meaning of a manifest changes, so every digest changes.
pub const FORMAT_VERSION: u32 = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub label: String,
    pub parent: ParentInput,
    pub definition: Definition,
    /// Package entries in the order given.
    pub packages: Vec<String>,
    /// Workspace-relative path -> content, mode and why it counts.
    pub files: BTreeMap<String, FileInput>,
    /// The system's extra vars the play uses (all of them when the analysis
    /// gave up; none for layers without a playbook).
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Inventory variables the play uses, closed over their definitions:
    /// name -> defining file (relative to the inventory) -> blake3 of the
    /// definition's source text.
    pub inventory_vars: BTreeMap<String, BTreeMap<String, String>>,
    /// The inventory groups the working container is in (`group_names`).
    pub inventory_groups: Vec<String>,
    /// Where the analysis had to over-approximate, and why.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ParentInput {
    Scratch,
    Layer { label: String, digest: Digest },
    Image { reference: String },
}

/// The layer's own declaration, as it affects the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub setup: Vec<String>,
    /// The command template that installs `packages` (absent when there are none).
    pub package_command: Option<String>,
    pub packages_file: Option<String>,
    pub scripts: Vec<String>,
    pub run: Vec<String>,
    pub inputs: Vec<String>,
    pub source: Option<String>,
    pub playbook: Option<String>,
    pub groups: Vec<String>,
    pub roles_path: Vec<String>,
    /// Commands run in the committed image; a layer that passed other tests
    /// is not a layer that passed these.
    #[serde(default)]
    pub tests: Vec<String>,
    /// Committed with fixed timestamps.
    #[serde(default)]
    pub reproducible: bool,
    /// How the play reached the container (layers with a playbook): the
    /// play's environment (/dev, /proc, mounts) differs.
    #[serde(default)]
    pub ansible_connection: Option<String>,
    /// Commands run in the booted image: a layer that passed other boot
    /// tests is not a layer that passed these. Absent when there are none
    /// (the digests of layers without them are unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot_tests: Vec<String>,
    /// How a layer with boot tests boots (kernel, command line, memory,
    /// timeout): a boot on other terms is another test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    /// The architecture built for, unless x86_64 (whose digests are those
    /// of layers built before layerbuild knew other architectures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
}

/// The boot tests' runner (the kernel arguments layerbuild sets, the
/// scripts that take the boot on to its default target and run the tests,
/// what counts as a passing boot): an input of each layer with boot tests,
/// so a stricter runner does not reuse passes of a laxer one. Raised
/// whenever the runner changes (a test in `executor::qemu` keeps a hash
/// of it, and fails until this is raised with it).
pub const BOOT_RUNNER: u32 = 2;

/// The `mitogen` connection's plugins as layerbuild ships them (the
/// connection, its fallback, the strategies, their settings): a part of
/// the connection's name in digests, so an image a changed plugin would
/// make differently is not reused. Raised whenever they change (a test in
/// `executor::ansible` keeps a hash of them, and fails until this is
/// raised with it).
pub const MITOGEN_RUNNER: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInput {
    pub hash: files::ContentHash,
    /// `100644`, `100755`, `120000`... (no allocation for the usual ones).
    pub mode: std::borrow::Cow<'static, str>,
    /// `playbook`, `source`, `role:NAME`, `inventory`, `script`, `input`,
    /// `packages_file`, `setup`, or `play` (a file outside the source the play reads).
    /// Shared by every file of the same origin.
    pub origin: std::sync::Arc<str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fingerprint {
    pub label: Label,
    pub digest: Digest,
    pub manifest: Manifest,
    /// Inventory variables file by file, with values, for explanations only
    /// (one snapshot shared by every layer of the run).
    #[serde(skip)]
    pub vars: std::sync::Arc<inventory::VarSnapshot>,
    /// Workspace-relative directory the manifest's inventory files are relative to.
    #[serde(skip)]
    pub inventory: Option<String>,
    /// The names of the system's vars, used or not (for explanations: a
    /// variable that stopped counting is still defined, or is gone).
    #[serde(skip)]
    pub system_vars: std::sync::Arc<BTreeSet<String>>,
    /// The values of the system's `secret_vars` (system vars and inventory
    /// definitions), to redact from logs and messages.
    #[serde(skip)]
    pub secrets: crate::secrets::Secrets,
    /// Workspace-relative variables files holding ansible-vault data (whole
    /// or inline), whose decrypted values are redacted too.
    #[serde(skip)]
    pub vault_files: Vec<String>,
    /// Only the digest is known (served by the memo): the manifest is
    /// empty and must never be recorded; fingerprint again for more.
    #[serde(skip)]
    pub light: bool,
}

impl Fingerprint {
    /// A digest without its manifest (see [`Fingerprint::light`]). The
    /// manifest's format 0 is refused by the cache's writers.
    pub fn light(label: Label, digest: Digest) -> Fingerprint {
        Fingerprint {
            manifest: Manifest {
                format: 0,
                label: label.to_string(),
                parent: ParentInput::Scratch,
                definition: Definition::default(),
                packages: vec![],
                files: BTreeMap::new(),
                vars: BTreeMap::new(),
                inventory_vars: BTreeMap::new(),
                inventory_groups: vec![],
                notes: vec![],
            },
            label,
            digest,
            vars: Default::default(),
            inventory: None,
            system_vars: Default::default(),
            secrets: Default::default(),
            vault_files: vec![],
            light: true,
        }
    }
}

/// The first 12 characters of a digest or image id, as shown to people
/// (the whole string when shorter; never a panic, whatever a database
/// row holds).
pub use crate::digest::short;

impl Manifest {
    /// blake3 of the manifest's JSON, hashed as it is written (never held
    /// whole: a layer of a large source lists thousands of files).
    pub fn digest(&self) -> Digest {
        use std::io::Write;
        let mut h = blake3::Hasher::new();
        let mut w = std::io::BufWriter::with_capacity(16 * 1024, &mut h);
        serde_json::to_writer(&mut w, self).expect("a manifest always serialises");
        w.flush().expect("hashing never fails");
        drop(w);
        Digest::of_hash(&h.finalize())
    }
}

/// Per-layer results of the analysis that does not depend on parents.
#[derive(Default)]
struct LayerInputs {
    roles: BTreeMap<String, String>,
    extra_files: BTreeSet<String>,
    /// Files and directories the play names (inputs whatever .gitignore says).
    referenced: BTreeSet<String>,
    /// Why every variable counts, known before reading the play (ansible.cfg plugins).
    var_fallback: Option<String>,
    setup_refs: BTreeSet<String>,
    /// YAML files the play loads.
    read: BTreeSet<String>,
    /// Why every file of the source counts, if the analysis could not bound what the play reads.
    whole_source: Option<String>,
    /// `group_vars/`, `host_vars/` beside the playbook.
    var_dirs: BTreeSet<String>,
    playbook_dir: String,
    /// Why the files the play reads count their exact permissions (a
    /// `copy` or `template` task may keep them), with the file and line.
    keeps_modes: Option<String>,
    notes: Vec<String>,
}

/// A manifest, or workspace paths the play reads that the file index does
/// not hold yet (index them and build it again).
enum Built {
    Manifest(Box<Manifest>),
    Missing(BTreeSet<String>),
}

/// A layer's manifest hashed (and kept, when asked), or workspace paths to
/// index before building it again.
enum Hashed {
    Digest {
        digest: Digest,
        manifest: Option<Box<Manifest>>,
    },
    Missing(BTreeSet<String>),
}

impl Hashed {
    fn of(built: Built, keep: bool) -> Hashed {
        match built {
            Built::Manifest(m) => Hashed::Digest {
                digest: m.digest(),
                manifest: keep.then_some(m),
            },
            Built::Missing(paths) => Hashed::Missing(paths),
        }
    }
}

/// Fingerprints `labels`, which must be in topological order and closed under
/// ancestors (as [`crate::graph::LayerGraph::select`] returns them).
pub fn fingerprint(
    ws: &Workspace,
    system: Option<&System>,
    labels: &[Label],
) -> Result<BTreeMap<Label, Fingerprint>> {
    fingerprint_with(ws, system, labels, None)
}

/// [`fingerprint`] with a stat cache: files its trusted entries cover are
/// not read; what the scan learnt is left in it (see [`FileIndex::build`]).
pub fn fingerprint_with(
    ws: &Workspace,
    system: Option<&System>,
    labels: &[Label],
    stat: Option<&mut statcache::StatCache>,
) -> Result<BTreeMap<Label, Fingerprint>> {
    fingerprint_observed(ws, system, labels, stat, &Observer::new(), true).map(|(p, _)| p)
}

/// [`fingerprint_with`], recording every file-system access in `obs` (for
/// the memo: [`session`]). Without `keep`, manifests are dropped as
/// soon as they are hashed ([`Fingerprint::light`] prints: digests only).
pub fn fingerprint_observed(
    ws: &Workspace,
    system: Option<&System>,
    labels: &[Label],
    mut stat: Option<&mut statcache::StatCache>,
    obs: &Observer,
    keep: bool,
) -> Result<(BTreeMap<Label, Fingerprint>, Leftovers)> {
    let t = std::time::Instant::now();
    let inventory = system.and_then(|s| s.inventory.clone());
    let (analysed, mut index) =
        discover_and_index(obs, ws, labels, inventory.as_ref(), stat.as_deref_mut())?;
    let t = crate::timings::phase("  fingerprint: discover the plays", t);
    follow_links_into_index(obs, ws, &mut index, stat.as_deref_mut())?;
    // In parallel; the first error in label order.
    labels
        .par_iter()
        .map(|label| check_links_out(obs, ws, &ws.layers[label], &analysed[label], &index))
        .collect::<Vec<_>>()
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
    let any_play = labels.iter().any(|l| ws.layers[l].playbook.is_some());
    let model = inventory
        .as_ref()
        .filter(|_| any_play)
        .map(|inv| inventory_model(obs, ws, inv, &index));
    let mut inventory_vars = match &model {
        Some(m) => {
            let files: Vec<String> = index.under(&m.base).map(|(p, _)| p.clone()).collect();
            inventory::snapshot(obs, &ws.root, files.iter())
        }
        None => Default::default(),
    };
    let play_models = play_var_models(
        obs,
        ws,
        &analysed,
        model.as_ref(),
        &index,
        &mut inventory_vars,
    );
    let vault_files = vault_files(&inventory_vars);
    let secrets = system.map_or_else(Default::default, |s| {
        collect_secrets(obs, ws, s, &mut inventory_vars)
    });
    let shared = Shared {
        inventory: model.as_ref().map(|m| m.base.clone()),
        vars: std::sync::Arc::new(inventory_vars),
        system_vars: std::sync::Arc::new(
            system
                .map(|s| s.vars.keys().cloned().collect())
                .unwrap_or_default(),
        ),
        secrets,
        vault_files,
    };
    let t = crate::timings::phase("  fingerprint: index and inventory", t);
    let analyzer = vars::Analyzer::default();
    // Files hashed were analysed from the same bytes: not read again.
    analyzer.seed(index.take_analysed());
    let stage = Manifests {
        obs,
        ws,
        system,
        labels,
        analysed: &analysed,
        model: model.as_ref(),
        play_models: &play_models,
        analyzer: &analyzer,
        position: labels.iter().enumerate().map(|(i, l)| (l, i)).collect(),
        keep,
    };
    let out = stage.run(&mut index, stat, &shared)?;
    crate::timings::phase("  fingerprint: manifests", t);
    let leftovers = Leftovers {
        index,
        rest: Box::new((analyzer, analysed.into_values().collect::<Vec<_>>())),
    };
    Ok((out, leftovers))
}

/// What one layer's discovery found: the layer, its inputs, the roots to
/// walk for it and the paths that count whatever .gitignore says.
type Discovered<'a> = (&'a Label, LayerInputs, BTreeSet<String>, BTreeSet<String>);

/// The plays discovered and the file index built: the layers' sources are
/// walked and hashed while the plays are discovered (each on its own, in
/// parallel); what the plays add (roles elsewhere, files named outright) is
/// indexed after.
fn discover_and_index<'a>(
    obs: &Observer,
    ws: &Workspace,
    labels: &'a [Label],
    inventory: Option<&String>,
    mut stat: Option<&mut statcache::StatCache>,
) -> Result<(BTreeMap<&'a Label, LayerInputs>, FileIndex)> {
    let sources: BTreeSet<String> = labels
        .iter()
        .filter_map(|l| ws.layers[l].source.clone())
        .collect();
    let discover = || -> Vec<Result<Discovered>> {
        labels
            .par_iter()
            .map(|label| discover_layer(obs, ws, label, inventory))
            .collect()
    };
    let walk_sources = || {
        FileIndex::walk_roots(
            obs,
            &ws.root,
            &sources,
            &ws.cache_dir,
            &ws.allow_outside,
            stat.as_deref_mut(),
        )
    };
    let (discovered, index) = rayon::join(discover, walk_sources);
    let mut analysed: BTreeMap<&Label, LayerInputs> = BTreeMap::new();
    let mut roots: BTreeSet<String> = BTreeSet::new();
    let mut explicit: BTreeSet<String> = BTreeSet::new();
    // The first layer's error in label order, whatever finished first.
    for d in discovered {
        let (label, inputs, r, e) = d?;
        roots.extend(r);
        explicit.extend(e);
        analysed.insert(label, inputs);
    }
    obs.forget_derived();
    let mut index = index?;
    index.finish(
        obs,
        &ws.root,
        &sources,
        &roots,
        &explicit,
        &ws.cache_dir,
        &ws.allow_outside,
        stat,
    )?;
    Ok((analysed, index))
}

/// Discovers one layer's play, without the file index.
fn discover_layer<'a>(
    obs: &Observer,
    ws: &Workspace,
    label: &'a Label,
    inventory: Option<&String>,
) -> Result<Discovered<'a>> {
    let mut roots: BTreeSet<String> = BTreeSet::new();
    let mut explicit: BTreeSet<String> = BTreeSet::new();
    let layer = &ws.layers[label];
    let mut inputs = LayerInputs {
        setup_refs: setup_references(obs, ws, layer),
        ..LayerInputs::default()
    };
    if let (Some(source), Some(playbook)) = (&layer.source, &layer.playbook) {
        discover_play(obs, ws, layer, source, playbook, &mut inputs)?;
        explicit.extend(inputs.var_dirs.iter().cloned());
        // Ansible reads the inventory whatever .gitignore says.
        if let Some(inv) = inventory {
            explicit.insert(inv.clone());
            if !obs.is_dir(&ws.root.join(inv)) {
                // group_vars/, host_vars/ and files the play may read
                // through inventory_dir live beside an inventory file.
                explicit.insert(dir_of(inv));
            }
        }
        explicit.insert(format!("{source}/{playbook}"));
    }
    roots.extend(layer.source.iter().cloned());
    if inputs.whole_source.is_some() {
        // What the play reads is known only at run time: every
        // file of the workspace counts (see `add_whole_workspace`).
        roots.insert(".".into());
    }
    roots.extend(inputs.roles.values().cloned());
    // What Ansible loads from each used role without a task naming
    // it counts whatever .gitignore says.
    for dir in inputs.roles.values() {
        for sub in ["tasks", "handlers", "vars", "defaults", "meta"] {
            explicit.insert(format!("{dir}/{sub}"));
        }
    }
    explicit.extend(layer.scripts.iter().cloned());
    explicit.extend(layer.inputs.iter().cloned());
    explicit.extend(layer.packages_file.iter().cloned());
    explicit.extend(inputs.extra_files.iter().cloned());
    explicit.extend(inputs.referenced.iter().cloned());
    explicit.extend(inputs.setup_refs.iter().cloned());
    Ok((label, inputs, roots, explicit))
}

/// What the play of a layer (`playbook` in `source`) uses, into `inputs`.
fn discover_play(
    obs: &Observer,
    ws: &Workspace,
    layer: &Layer,
    source: &str,
    playbook: &str,
    inputs: &mut LayerInputs,
) -> Result<()> {
    let found = ansible::discover(
        obs,
        &ws.root,
        source,
        playbook,
        &layer.roles_path,
        &ws.allow_outside,
    )?;
    inputs.roles = found.roles;
    if let Some(reason) = found.all_roles_reason {
        inputs
            .notes
            .push(format!("every role counts because {reason}"));
        inputs
            .roles
            .extend(ansible::all_roles(obs, &ws.root, &layer.roles_path));
    }
    inputs.extra_files = found.extra_files;
    inputs.referenced = found.referenced;
    inputs.read = found.read;
    inputs.whole_source = found.whole_source;
    inputs.var_dirs = found.var_dirs;
    inputs.playbook_dir = found.playbook_dir;
    inputs.keeps_modes = found.keeps_modes;
    // ansible-playbook runs in the source directory and reads its
    // ansible.cfg, unless the directory is world-writable (then Ansible
    // ignores the file, with a warning).
    let mut plugins = None;
    if !world_writable(obs, &ws.root.join(source)) {
        let cfg = format!("{source}/ansible.cfg");
        if obs.is_file(&ws.root.join(&cfg)) {
            inputs.referenced.insert(cfg);
        }
        let (cfg_paths, cfg_plugins) = ansible_cfg_paths(obs, ws, source)?;
        inputs.referenced.extend(cfg_paths);
        plugins = cfg_plugins;
    }
    inputs.var_fallback = plugins.or(found.all_vars_reason);
    inputs.notes.extend(found.notes);
    Ok(())
}

/// Is `dir` writable by others? ansible-playbook then does not load the
/// `ansible.cfg` of its working directory (`find_ini_config_file`, which
/// stats the directory following links). Its permission bits are recorded
/// (a `Stat` look), so the memo sees a `chmod`.
fn world_writable(obs: &Observer, dir: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        obs.metadata(dir)
            .is_ok_and(|m| m.permissions().mode() & 0o002 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = (obs, dir);
        false
    }
}

/// The workspace-relative directory holding `path` (`.` at the top).
fn dir_of(path: &str) -> String {
    std::path::Path::new(path)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| ".".into())
}

/// Ansible follows symlinks: the target of a link inside the workspace
/// is an input too (whatever .gitignore says), as are its own links'.
fn follow_links_into_index(
    obs: &Observer,
    ws: &Workspace,
    index: &mut FileIndex,
    mut stat: Option<&mut statcache::StatCache>,
) -> Result<()> {
    let mut followed: BTreeSet<String> = BTreeSet::new();
    loop {
        let targets: BTreeSet<String> = index
            .links()
            .values()
            .filter_map(|t| match t {
                LinkTarget::Inside(r) if r != "." && !followed.contains(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        followed.extend(targets.iter().cloned());
        index.add_explicit(
            obs,
            &ws.root,
            &targets,
            &ws.cache_dir,
            &ws.allow_outside,
            stat.as_deref_mut(),
        )?;
    }
}

/// The system's inventory (`inv`: a directory, or a file with
/// `group_vars/` and `host_vars/` beside it), from the files indexed.
fn inventory_model(
    obs: &Observer,
    ws: &Workspace,
    inv: &String,
    index: &FileIndex,
) -> inventory::InventoryModel {
    let is_dir = obs.is_dir(&ws.root.join(inv));
    let files: Vec<String> = if is_dir {
        index.under(inv).map(|(p, _)| p.clone()).collect()
    } else {
        index
            .under(&dir_of(inv))
            .map(|(p, _)| p.clone())
            .filter(|p| p == inv || p.contains("group_vars/") || p.contains("host_vars/"))
            .collect()
    };
    inventory::InventoryModel::load(obs, &ws.root, inv, is_dir, files.iter())
}

/// group_vars/ and host_vars/ beside each playbook: one model per
/// playbook directory, its definitions keyed `//DIR/FILE`; their files'
/// variables are added to `inventory_vars`.
fn play_var_models(
    obs: &Observer,
    ws: &Workspace,
    analysed: &BTreeMap<&Label, LayerInputs>,
    model: Option<&inventory::InventoryModel>,
    index: &FileIndex,
    inventory_vars: &mut inventory::VarSnapshot,
) -> BTreeMap<String, inventory::InventoryModel> {
    let mut play_models: BTreeMap<String, inventory::InventoryModel> = BTreeMap::new();
    for inputs in analysed.values() {
        if inputs.var_dirs.is_empty()
            || play_models.contains_key(&inputs.playbook_dir)
            || model.is_some_and(|m| m.base == inputs.playbook_dir)
        {
            continue;
        }
        let files: Vec<String> = inputs
            .var_dirs
            .iter()
            .flat_map(|d| index.under(d).map(|(p, _)| p.clone()))
            .collect();
        let mut m = inventory::InventoryModel::load(
            obs,
            &ws.root,
            &inputs.playbook_dir,
            true,
            files.iter(),
        );
        inventory_vars.extend(inventory::snapshot(obs, &ws.root, files.iter()));
        let base = m.base.clone();
        for d in &mut m.defs {
            d.file = if base == "." {
                format!("//{}", d.file)
            } else {
                format!("//{base}/{}", d.file)
            };
        }
        play_models.insert(inputs.playbook_dir.clone(), m);
    }
    play_models
}

/// Files with ansible-vault data: the executor opens them to redact
/// what Ansible decrypts.
fn vault_files(inventory_vars: &inventory::VarSnapshot) -> Vec<String> {
    inventory_vars
        .iter()
        .filter(|(_, f)| match f {
            inventory::FileVars::Encrypted => true,
            inventory::FileVars::Vars { vars } => vars.values().any(|v| v.vault),
            inventory::FileVars::Opaque => false,
        })
        .map(|(p, _)| p.clone())
        .collect()
}

/// The system's secret values, which never reach the snapshot (they are
/// stripped from `inventory_vars`; kept for `why --show-values`).
fn collect_secrets(
    obs: &Observer,
    ws: &Workspace,
    s: &System,
    inventory_vars: &mut inventory::VarSnapshot,
) -> crate::secrets::Secrets {
    let mut secrets = crate::secrets::Secrets::default();
    for (k, v) in &s.vars {
        if s.secret_vars.contains(k) {
            secrets.add(v);
        }
    }
    // Every line of a file that defines a secret, or that could not be
    // parsed and names one: Ansible prints the lines of a file it
    // cannot parse.
    for (rel, f) in inventory_vars.iter() {
        let holds = match f {
            inventory::FileVars::Vars { vars } => vars.keys().any(|k| s.secret_vars.contains(k)),
            inventory::FileVars::Opaque => true,
            inventory::FileVars::Encrypted => false,
        };
        if !holds || s.secret_vars.is_empty() {
            continue;
        }
        if let Ok(text) = obs.read_to_string(&ws.root.join(rel))
            && (matches!(f, inventory::FileVars::Vars { .. })
                || s.secret_vars.iter().any(|n| text.contains(n.as_str())))
        {
            secrets.add_lines(&text);
        }
    }
    crate::secrets::strip_snapshot(inventory_vars, &s.secret_vars, &mut secrets);
    secrets
}

/// What every full fingerprint of a run shares besides its manifest.
struct Shared {
    /// The inventory's directory, for layers that run a play.
    inventory: Option<String>,
    vars: std::sync::Arc<inventory::VarSnapshot>,
    system_vars: std::sync::Arc<BTreeSet<String>>,
    secrets: crate::secrets::Secrets,
    vault_files: Vec<String>,
}

impl Shared {
    fn fingerprint(
        &self,
        label: &Label,
        layer: &Layer,
        digest: Digest,
        manifest: Manifest,
    ) -> Fingerprint {
        let runs_play = layer.playbook.is_some() && self.inventory.is_some();
        Fingerprint {
            label: label.clone(),
            digest,
            manifest,
            vars: if runs_play {
                self.vars.clone()
            } else {
                Default::default()
            },
            inventory: self.inventory.clone().filter(|_| runs_play),
            system_vars: self.system_vars.clone(),
            secrets: self.secrets.clone(),
            vault_files: if runs_play {
                self.vault_files.clone()
            } else {
                vec![]
            },
            light: false,
        }
    }
}

/// A layer's digest, and its manifest when kept.
type Digested = (Digest, Option<Box<Manifest>>);

/// The manifests stage: every layer's manifest and digest, in parallel
/// wave by wave (a wave holds the layers whose parents are in earlier
/// waves), each hashed as it is serialised and, unless `keep` asks for
/// manifests, dropped at once. Taken in label order, until a layer reads a
/// file the index lacks: the index then grows, and the layers after it are
/// done again one by one (as they would have been in order).
struct Manifests<'a> {
    obs: &'a Observer,
    ws: &'a Workspace,
    system: Option<&'a System>,
    labels: &'a [Label],
    analysed: &'a BTreeMap<&'a Label, LayerInputs>,
    model: Option<&'a inventory::InventoryModel>,
    play_models: &'a BTreeMap<String, inventory::InventoryModel>,
    analyzer: &'a vars::Analyzer,
    /// Each label's place in `labels`.
    position: BTreeMap<&'a Label, usize>,
    keep: bool,
}

impl Manifests<'_> {
    fn run(
        &self,
        index: &mut FileIndex,
        mut stat: Option<&mut statcache::StatCache>,
        shared: &Shared,
    ) -> Result<BTreeMap<Label, Fingerprint>> {
        // Paths the play reads that were added to the index after the walk.
        let mut tried: BTreeSet<String> = BTreeSet::new();
        let mut early = self.early(index, &tried)?;
        let mut grown = false;
        let mut out: BTreeMap<Label, Fingerprint> = BTreeMap::new();
        for (i, label) in self.labels.iter().enumerate() {
            let (digest, manifest) = match early[i].take().filter(|_| !grown) {
                Some(Ok(Hashed::Digest { digest, manifest })) => (digest, manifest),
                Some(Err(e)) => return Err(e),
                _ => {
                    let digest = self.parent_of(label)?.map(|p| &out[&self.labels[p]].digest);
                    let parent = self.parent_input(label, digest);
                    let (hashed, grew) =
                        self.build_growing(label, &parent, index, &mut tried, &mut stat)?;
                    grown |= grew;
                    hashed
                }
            };
            let fp = match manifest {
                Some(m) => shared.fingerprint(label, &self.ws.layers[label], digest, *m),
                None => Fingerprint::light(label.clone(), digest),
            };
            out.insert(label.clone(), fp);
        }
        Ok(out)
    }

    fn manifest_of(
        &self,
        label: &Label,
        parent: ParentInput,
        index: &FileIndex,
        tried: &BTreeSet<String>,
    ) -> Result<Built> {
        let inputs = &self.analysed[label];
        build_manifest(
            self.obs,
            self.ws,
            self.system,
            &self.ws.layers[label],
            inputs,
            index,
            parent,
            self.model,
            self.play_models.get(&inputs.playbook_dir),
            tried,
            self.analyzer,
        )
    }

    /// The place of the label's parent layer, if it has one.
    fn parent_of(&self, label: &Label) -> Result<Option<usize>> {
        match &self.ws.layers[label].parent {
            Parent::Layer(p) => match self.position.get(p) {
                Some(&i) if i < self.position[label] => Ok(Some(i)),
                _ => Err(Error::env(format!(
                    "internal: {p} fingerprinted after its child {label}"
                ))),
            },
            _ => Ok(None),
        }
    }

    fn parent_input(&self, label: &Label, digest: Option<&Digest>) -> ParentInput {
        match &self.ws.layers[label].parent {
            Parent::Scratch => ParentInput::Scratch,
            Parent::Image(r) => ParentInput::Image {
                reference: r.clone(),
            },
            Parent::Layer(p) => ParentInput::Layer {
                label: p.to_string(),
                digest: digest.cloned().unwrap_or_default(),
            },
        }
    }

    /// Every layer hashed with the index as it is, wave by wave in
    /// parallel; `None` for a layer whose parent was not digested (it
    /// failed, or reads files the index lacks: it comes first in label
    /// order, and this one is redone).
    fn early(
        &self,
        index: &FileIndex,
        tried: &BTreeSet<String>,
    ) -> Result<Vec<Option<Result<Hashed>>>> {
        let mut waves: Vec<Vec<usize>> = vec![];
        let mut depth: Vec<usize> = Vec::with_capacity(self.labels.len());
        for label in self.labels {
            let d = match self.parent_of(label)? {
                Some(p) => depth[p] + 1,
                None => 0,
            };
            depth.push(d);
            if waves.len() <= d {
                waves.push(vec![]);
            }
            waves[d].push(depth.len() - 1);
        }
        let mut early: Vec<Option<Result<Hashed>>> = (0..self.labels.len()).map(|_| None).collect();
        for wave in &waves {
            let done: Vec<(usize, Result<Hashed>)> = wave
                .par_iter()
                .filter_map(|&i| {
                    let label = &self.labels[i];
                    let digest = match self.parent_of(label).ok()? {
                        Some(p) => match &early[p] {
                            Some(Ok(Hashed::Digest { digest, .. })) => Some(digest),
                            _ => return None,
                        },
                        None => None,
                    };
                    let built =
                        self.manifest_of(label, self.parent_input(label, digest), index, tried);
                    Some((i, built.map(|b| Hashed::of(b, self.keep))))
                })
                .collect();
            for (i, r) in done {
                early[i] = Some(r);
            }
        }
        Ok(early)
    }

    /// The layer's digest (and manifest), the index grown by the paths its
    /// manifest finds missing until it has them all; true when it grew.
    fn build_growing(
        &self,
        label: &Label,
        parent: &ParentInput,
        index: &mut FileIndex,
        tried: &mut BTreeSet<String>,
        stat: &mut Option<&mut statcache::StatCache>,
    ) -> Result<(Digested, bool)> {
        let ws = self.ws;
        let mut grown = false;
        loop {
            let built = self.manifest_of(label, parent.clone(), index, tried)?;
            let mut paths = match Hashed::of(built, self.keep) {
                Hashed::Digest { digest, manifest } => return Ok(((digest, manifest), grown)),
                Hashed::Missing(paths) => paths,
            };
            if paths.remove(WHOLE_WORKSPACE) {
                index.add_workspace(
                    self.obs,
                    &ws.root,
                    &ws.cache_dir,
                    &ws.allow_outside,
                    stat.as_deref_mut(),
                )?;
            }
            tried.extend(paths.iter().cloned());
            index.add_explicit(
                self.obs,
                &ws.root,
                &paths,
                &ws.cache_dir,
                &ws.allow_outside,
                stat.as_deref_mut(),
            )?;
            self.analyzer.seed(index.take_analysed());
            grown = true;
        }
    }
}

/// What a fingerprint used and no longer needs but for the stat cache's
/// new entries (the file index holds them): hundreds of thousands of small
/// allocations, whose freeing takes tens of milliseconds. The caller
/// frees them where that costs least ([`session`]: the analyses
/// before the caches are stored, the index once the stat cache is
/// written). Freed on a thread of their own instead, they stayed counted
/// in the process's memory while the caches were stored (the allocator
/// reclaims a page freed from another thread late): a sixth of a large
/// run's peak.
pub struct Leftovers {
    pub index: FileIndex,
    /// The analyses (only to be freed).
    pub rest: Box<dyn Send>,
}

#[allow(clippy::too_many_arguments)]
fn build_manifest(
    obs: &Observer,
    ws: &Workspace,
    system: Option<&System>,
    layer: &Layer,
    inputs: &LayerInputs,
    index: &FileIndex,
    parent: ParentInput,
    model: Option<&inventory::InventoryModel>,
    play_model: Option<&inventory::InventoryModel>,
    tried: &BTreeSet<String>,
    analyzer: &vars::Analyzer,
) -> Result<Built> {
    let mut b = LayerManifest {
        obs,
        ws,
        system,
        layer,
        inputs,
        index,
        model,
        play_model,
        tried,
        analyzer,
        files: BTreeMap::new(),
        notes: inputs.notes.clone(),
    };
    b.add_named_files();
    if let Some(reason) = &inputs.whole_source {
        if !add_whole_workspace(layer, index, &mut b.files) {
            return Ok(Built::Missing(BTreeSet::from([WHOLE_WORKSPACE.into()])));
        }
        whole_workspace_note(layer, reason, index, &mut b.notes);
    }
    follow_links(index, &mut b.files);
    let mut counted = CountedVars::default();
    if layer.playbook.is_some() {
        let used = match b.play_reads()? {
            Ok(used) => used,
            Err(missing) => return Ok(Built::Missing(missing)),
        };
        let used = b.with_fallback(used);
        counted = b.count_vars(used);
    }
    if let Some(reason) = &inputs.keeps_modes {
        b.keep_play_modes(reason);
    }
    Ok(Built::Manifest(Box::new(Manifest {
        format: FORMAT_VERSION,
        label: layer.label.to_string(),
        parent,
        definition: definition(ws, layer),
        packages: layer.packages.clone(),
        files: b.files,
        vars: counted.system,
        inventory_vars: counted.inventory,
        inventory_groups: counted.groups,
        notes: b.notes,
    })))
}

/// The layer's declaration as it goes into the manifest (workspace
/// defaults filled in).
fn definition(ws: &Workspace, layer: &Layer) -> Definition {
    Definition {
        setup: layer.setup.clone(),
        package_command: (!layer.packages.is_empty()).then(|| {
            layer
                .package_command
                .clone()
                .unwrap_or_else(|| ws.build.package_command.clone())
        }),
        packages_file: layer.packages_file.clone(),
        scripts: layer.scripts.clone(),
        run: layer.run.clone(),
        inputs: layer.inputs.clone(),
        source: layer.source.clone(),
        playbook: layer.playbook.clone(),
        groups: layer.groups.clone(),
        roles_path: layer.roles_path.clone(),
        tests: layer.tests.clone(),
        reproducible: ws.build.reproducible,
        ansible_connection: layer.playbook.as_ref().map(|_| {
            let c = layer
                .ansible_connection
                .clone()
                .unwrap_or_else(|| ws.build.ansible_connection.clone());
            match c.as_str() {
                "mitogen" => format!("mitogen runner={MITOGEN_RUNNER}"),
                _ => c,
            }
        }),
        boot_tests: layer.boot_tests.clone(),
        boot: (!layer.boot_tests.is_empty()).then(|| {
            let b = &layer.boot;
            // A named kernel quoted: `kernel = "newest"` names
            // /boot/vmlinuz-newest, which is not the newest kernel.
            let kernel = match &b.kernel {
                Some(k) => format!("{k:?}"),
                None => "newest".to_string(),
            };
            format!(
                "runner={BOOT_RUNNER} kernel={kernel} cmdline={:?} memory_mib={} timeout_secs={}",
                b.cmdline, b.memory_mib, b.timeout_secs
            )
        }),
        arch: (ws.arch != crate::arch::Arch::X86_64).then(|| ws.arch.name().to_string()),
    }
}

/// The variables that count for a layer's play, as the manifest holds them.
#[derive(Default)]
struct CountedVars {
    /// The system's vars (a secret by its hash only).
    system: BTreeMap<String, serde_json::Value>,
    /// Name → file → hash of each definition in the inventory and beside the playbook.
    inventory: BTreeMap<String, BTreeMap<String, String>>,
    /// The groups the layer's host is in.
    groups: Vec<String>,
}

/// Adds `path` with the hash and mode of `h`, unless it is there already.
fn add_file(
    files: &mut BTreeMap<String, FileInput>,
    path: &str,
    h: &FileHash,
    origin: &std::sync::Arc<str>,
) {
    files.entry(path.to_string()).or_insert_with(|| FileInput {
        hash: h.hash,
        mode: h.mode.clone(),
        origin: origin.clone(),
    });
}

/// One layer's manifest being built: what it is built from, and the files
/// and notes gathered so far.
struct LayerManifest<'a> {
    obs: &'a Observer,
    ws: &'a Workspace,
    system: Option<&'a System>,
    layer: &'a Layer,
    inputs: &'a LayerInputs,
    index: &'a FileIndex,
    model: Option<&'a inventory::InventoryModel>,
    play_model: Option<&'a inventory::InventoryModel>,
    tried: &'a BTreeSet<String>,
    analyzer: &'a vars::Analyzer,
    files: BTreeMap<String, FileInput>,
    notes: Vec<String>,
}

impl LayerManifest<'_> {
    /// The files the layer and its play name: roles, playbook, files the
    /// play reads, scripts, inputs, files setup commands copy, the
    /// packages file.
    fn add_named_files(&mut self) {
        let (index, inputs, layer) = (self.index, self.inputs, self.layer);
        let files = &mut self.files;
        // One origin string per kind, shared by its files.
        let play: std::sync::Arc<str> = "play".into();
        // Role files first, so a role inside the source directory is labelled as a role.
        for (name, dir) in &inputs.roles {
            let origin: std::sync::Arc<str> = format!("role:{name}").into();
            for (p, h) in index.under(dir) {
                add_file(files, p, h, &origin);
            }
        }
        if let Some(source) = &layer.source {
            let playbook = layer.playbook.as_ref().map(|pb| format!("{source}/{pb}"));
            if let Some(pb) = &playbook
                && let Some(h) = index.get(pb)
            {
                add_file(files, pb, h, &"playbook".into());
            }
            if inputs.whole_source.is_none() {
                for p in &inputs.read {
                    if let Some(h) = index.get(p) {
                        add_file(files, p, h, &play);
                    }
                }
            }
        }
        for p in &inputs.extra_files {
            if let Some(h) = index.get(p) {
                add_file(files, p, h, &play);
            }
        }
        for r in &inputs.referenced {
            for (p, h) in index.under(r) {
                add_file(files, p, h, &play);
            }
        }
        for (list, origin) in [
            (&layer.scripts, "script"),
            (&layer.inputs, "input"),
            (
                &inputs.setup_refs.iter().cloned().collect::<Vec<_>>(),
                "setup",
            ),
        ] {
            let kind: std::sync::Arc<str> = origin.into();
            for rel in list {
                for (p, h) in index.under(rel) {
                    if origin == "script" {
                        add_file(files, p, h, &kind);
                    } else {
                        // Host commands copy these with their permissions
                        // and (as root) their owner, whatever else reads
                        // them too.
                        let mode = match index.owner(p) {
                            Some(o) => {
                                format!("{} {}", h.copied_mode(), files::owner_text(o)).into()
                            }
                            None => h.copied_mode(),
                        };
                        files
                            .entry(p.to_string())
                            .and_modify(|f| f.mode.clone_from(&mode))
                            .or_insert_with(|| FileInput {
                                hash: h.hash,
                                mode,
                                origin: kind.clone(),
                            });
                    }
                }
                if origin != "script" {
                    // And the directories they create, when their
                    // permissions or owner are unusual (`DIR/`, no content).
                    for (d, meta) in index.dirs_under(rel) {
                        files.entry(format!("{d}/")).or_insert_with(|| FileInput {
                            hash: files::ContentHash::default(),
                            mode: meta.copied_mode(),
                            origin: kind.clone(),
                        });
                    }
                }
            }
        }
        if let Some(pf) = &layer.packages_file
            && let Some(h) = index.get(pf)
        {
            add_file(files, pf, h, &"packages_file".into());
        }
    }

    /// A task of the play may copy files with their permissions (`copy`
    /// or `template` with `mode: preserve`, `synchronize`): every file the
    /// play reads counts them as host-side copies do (over-approximate:
    /// whichever task reads it), and a note says why.
    fn keep_play_modes(&mut self, reason: &str) {
        let index = self.index;
        for (p, f) in self.files.iter_mut() {
            let play = matches!(&*f.origin, "playbook" | "play" | "source" | "workspace")
                || f.origin.starts_with("role:");
            // A mode a setup command's copy gave (with its owner) stays.
            if play
                && let Some(h) = index.get(p)
                && f.mode == h.mode
            {
                f.mode = h.copied_mode();
            }
        }
        self.notes.push(format!(
            "files the play reads count their exact permissions because {reason}"
        ));
    }

    /// What the play reads, added until nothing new is: the files its
    /// files read by name, through links, and those the values of the
    /// variables it uses read. The variables it uses, or `Err(paths)`:
    /// files to index first.
    fn play_reads(&mut self) -> Result<std::result::Result<vars::VarUse, BTreeSet<String>>> {
        let index = self.index;
        loop {
            let before = self.files.len();
            let found = play_files(
                self.obs,
                self.ws,
                self.layer,
                self.inputs,
                &mut self.files,
                index,
                self.tried,
                &mut self.notes,
                self.analyzer,
            )?;
            let found = match found {
                Ok(u) => u,
                Err(missing) => return Ok(Err(missing)),
            };
            // A file the play reads through a link: its target counts, and
            // is analysed in turn.
            if follow_links(index, &mut self.files) {
                continue;
            }
            let (used, value_reads) = variables_closed(
                self.system,
                self.layer,
                found,
                self.model,
                self.play_model,
                self.analyzer,
            );
            if value_reads.reads.is_empty() && value_reads.read_unresolved.is_none() {
                return Ok(Ok(used));
            }
            if let Some(missing) = self.add_value_reads(&value_reads)? {
                return Ok(Err(missing));
            }
            follow_links(index, &mut self.files);
            if self.files.len() == before {
                return Ok(Ok(used));
            }
        }
    }

    /// A variable's value reads files: where it is used decides the
    /// search path, so every file of the source counts, and names are
    /// resolved from the playbook too. `Some(paths)`: files to index first.
    fn add_value_reads(&mut self, value_reads: &vars::VarUse) -> Result<Option<BTreeSet<String>>> {
        let (layer, index) = (self.layer, self.index);
        let Some(source) = &layer.source else {
            return Ok(None);
        };
        let reason = value_reads
            .read_unresolved
            .clone()
            .unwrap_or_else(|| "a variable's value reads files by name".to_string());
        if !self.notes.iter().any(|n| n.starts_with(WHOLE_NOTE)) {
            if !add_whole_workspace(layer, index, &mut self.files) {
                return Ok(Some(BTreeSet::from([WHOLE_WORKSPACE.into()])));
            }
            whole_workspace_note(layer, &reason, index, &mut self.notes);
        }
        let pb = format!("{source}/{}", layer.playbook.as_deref().unwrap_or(""));
        let mut missing = BTreeSet::new();
        let found = resolve_reads(
            self.obs,
            self.ws,
            layer,
            self.inputs,
            &pb,
            &value_reads.reads,
            index,
            self.tried,
            &mut missing,
        )?;
        if !missing.is_empty() {
            return Ok(Some(missing));
        }
        add_reads(index, &found, &mut self.files);
        Ok(None)
    }

    /// `used` with the reason every variable counts, if any: the one the
    /// analysis found, ansible.cfg's, or a file outside the source that
    /// holds Jinja; noted in the manifest.
    fn with_fallback(&mut self, mut used: vars::VarUse) -> vars::VarUse {
        if used.fallback.is_none() {
            used.fallback.clone_from(&self.inputs.var_fallback);
        }
        if used.fallback.is_none()
            && let Some((p, _)) = self.files.iter().find(|(p, f)| {
                &*f.origin == "workspace" && self.index.get(p).is_some_and(|h| h.jinja)
            })
        {
            // Counted by the whole-workspace fallback and not analysed: the
            // play may render it as a template.
            used.fallback = Some(format!(
                "the play may read any file, and {p} (outside its source) holds Jinja"
            ));
        }
        if let Some(reason) = &used.fallback {
            self.notes
                .push(format!("all inventory variables count because {reason}"));
        }
        used
    }

    /// The variables of the system, the inventory and beside the playbook
    /// that count for the play using `used`; when every variable counts,
    /// every file of the inventory does too.
    fn count_vars(&mut self, used: vars::VarUse) -> CountedVars {
        let (layer, model) = (self.layer, self.model);
        let whole = used.fallback.is_some();
        let counts = |name: &str| whole || used.names.contains(name) || read_by_ansible(name);
        let mut out = CountedVars::default();
        if let Some(s) = self.system {
            out.system = s
                .vars
                .iter()
                .filter(|(k, _)| counts(k))
                .map(|(k, v)| {
                    // A secret counts by its hash only.
                    if s.secret_vars.contains(k) {
                        (k.clone(), crate::secrets::marker(v))
                    } else {
                        (k.clone(), v.clone())
                    }
                })
                .collect();
        }
        let host = layer.label.slug();
        let groups = model
            .cloned()
            .unwrap_or_default()
            .effective_groups(&layer.groups, &host);
        if model.is_some() {
            out.groups = groups.iter().cloned().collect();
        }
        for (m, origin) in [(model, "inventory"), (self.play_model, "play")] {
            let Some(m) = m else { continue };
            let visible =
                |scope: &_| whole || inventory::InventoryModel::visible(scope, &groups, &host);
            for d in &m.defs {
                if visible(&d.scope) && counts(&d.name) {
                    out.inventory
                        .entry(d.name.clone())
                        .or_default()
                        .insert(d.file.clone(), d.hash.clone());
                }
            }
            self.add_model_files(m, origin, whole, visible);
        }
        out
    }

    /// The files of an inventory model that count whole: every one when
    /// every variable counts (other hosts, groups and files of the
    /// inventory may be read: hostvars, groups, inventory_dir), and those
    /// that could not be parsed and are `visible`.
    fn add_model_files(
        &mut self,
        m: &inventory::InventoryModel,
        origin: &str,
        whole: bool,
        visible: impl Fn(&inventory::Scope) -> bool,
    ) {
        let index = self.index;
        if whole {
            let dirs: Vec<String> = if origin == "play" {
                self.inputs.var_dirs.iter().cloned().collect()
            } else {
                vec![m.base.clone()]
            };
            for dir in &dirs {
                for (path, h) in index.under(dir) {
                    self.files.entry(path.clone()).or_insert_with(|| FileInput {
                        hash: h.hash,
                        mode: h.mode.clone(),
                        origin: origin.into(),
                    });
                }
            }
        }
        for (path, scope, why) in &m.opaque {
            if visible(scope)
                && let Some(h) = index.get(path)
            {
                self.files.entry(path.clone()).or_insert_with(|| FileInput {
                    hash: h.hash,
                    mode: h.mode.clone(),
                    origin: origin.into(),
                });
                self.notes.push(format!("{path} counts whole: {why}"));
            }
        }
    }
}

/// Stands for "walk the whole workspace" among the paths a manifest
/// found missing from the index.
const WHOLE_WORKSPACE: &str = ".";

/// How the manifest's note of a whole-workspace fallback begins.
const WHOLE_NOTE: &str = "every file of the workspace counts";

/// The fallback when what a play reads is known only at run time (a
/// templated `src`, a lookup of a variable, a plugin that reads files):
/// every file of the workspace counts for that layer, roles nobody uses and
/// files outside the source included, since the name may lead anywhere.
/// False when the index does not hold the whole workspace yet.
/// Files of the layer's source and roles path are analysed for the
/// variables they use (origin `source`); other files are not (origin
/// `workspace`: one holding Jinja makes every variable count).
fn add_whole_workspace(
    layer: &Layer,
    index: &FileIndex,
    files: &mut BTreeMap<String, FileInput>,
) -> bool {
    if !index.whole() {
        return false;
    }
    let dirs: Vec<String> = layer
        .source
        .iter()
        .chain(layer.roles_path.iter())
        .map(|d| {
            if d == "." {
                String::new()
            } else {
                format!("{d}/")
            }
        })
        .collect();
    let (source, workspace): (std::sync::Arc<str>, std::sync::Arc<str>) =
        ("source".into(), "workspace".into());
    for (p, h) in index.under(".") {
        let analysed = dirs.iter().any(|d| p.starts_with(d.as_str()));
        files.entry(p.clone()).or_insert_with(|| FileInput {
            hash: h.hash,
            mode: h.mode.clone(),
            origin: if analysed { &source } else { &workspace }.clone(),
        });
    }
    true
}

/// The note of a whole-workspace fallback, and a warning for each link
/// that leads out of the workspace (the play may read it, and what it
/// leads to cannot count).
fn whole_workspace_note(layer: &Layer, reason: &str, index: &FileIndex, notes: &mut Vec<String>) {
    if !notes.iter().any(|n| n.starts_with(WHOLE_NOTE)) {
        notes.push(format!("{WHOLE_NOTE} because {reason}"));
    }
    for (p, _) in index.under(".") {
        if let Some(LinkTarget::Outside(real)) = index.link(p) {
            let w = format!(
                "{p} leads out of the workspace (to {}) and is not counted, though the play may read it",
                real.display()
            );
            if !notes.contains(&w) {
                eprintln!("warning: {}: {w}", layer.label);
                notes.push(w);
            }
        }
    }
}

/// Lexically normalised workspace-relative path; `None` when it leaves the workspace.
fn normalize_rel(rel: &str) -> Option<String> {
    let mut out: Vec<&str> = vec![];
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(if out.is_empty() {
        ".".into()
    } else {
        out.join("/")
    })
}

fn parent_rel(rel: &str) -> &str {
    rel.rsplit_once('/').map_or(".", |(d, _)| d)
}

/// The files the play reads by name from `from` (lookups, template
/// includes, `with_file` loops), resolved the way Ansible searches: the
/// file's directory, its role's `templates/`, `files/`, `vars/` and
/// directory, the playbook's `templates/`, `files/`, `vars/` and directory.
/// Found paths are returned; paths that exist but are not indexed go to
/// `missing`. A path out of the workspace (absolute, `..`, or a link) is an
/// error naming the file.
#[allow(clippy::too_many_arguments)]
fn resolve_reads(
    obs: &Observer,
    ws: &Workspace,
    layer: &Layer,
    inputs: &LayerInputs,
    from: &str,
    names: &BTreeSet<String>,
    index: &FileIndex,
    tried: &BTreeSet<String>,
    missing: &mut BTreeSet<String>,
) -> Result<Vec<(String, Option<glob::Pattern>)>> {
    let role = inputs
        .roles
        .values()
        .find(|r| from.starts_with(&format!("{r}/")))
        .map(String::as_str);
    let pdir = inputs.playbook_dir.as_str();
    let search = ReadSearch {
        obs,
        ws,
        layer,
        from,
        index,
        tried,
        role,
        pdir,
        bases: search_bases(from, role, pdir),
    };
    let mut found = vec![];
    for name in names {
        search.resolve(name.trim(), &mut found, missing)?;
    }
    Ok(found)
}

/// Where Ansible looks for a file that `from` reads by a relative name, in order.
fn search_bases(from: &str, role: Option<&str>, pdir: &str) -> Vec<String> {
    let mut bases: Vec<String> = vec![parent_rel(from).to_string()];
    // A template under some `X/templates/` (or a file under `X/files/`) is
    // rendered by a task file in `X`, whose own `files/`, `templates/` and
    // directory Ansible searches too (a task file outside any role).
    let parent = parent_rel(from);
    let (x, last) = parent.rsplit_once('/').unwrap_or(("", parent));
    if matches!(last, "templates" | "files") {
        let x = if x.is_empty() { "." } else { x };
        for sub in ["files", "templates", "vars"] {
            bases.push(if x == "." {
                sub.to_string()
            } else {
                format!("{x}/{sub}")
            });
        }
        bases.push(x.to_string());
    }
    if let Some(r) = role {
        for sub in ["templates", "files", "vars"] {
            bases.push(format!("{r}/{sub}"));
        }
        bases.push(r.to_string());
    }
    for sub in ["templates", "files", "vars"] {
        bases.push(format!("{pdir}/{sub}"));
    }
    bases.push(pdir.to_string());
    bases
}

/// A search for the files one file of the play (`from`) reads by name.
struct ReadSearch<'a> {
    obs: &'a Observer,
    ws: &'a Workspace,
    layer: &'a Layer,
    from: &'a str,
    index: &'a FileIndex,
    tried: &'a BTreeSet<String>,
    /// The directory of the role `from` belongs to.
    role: Option<&'a str>,
    /// The playbook's directory.
    pdir: &'a str,
    /// [`search_bases`].
    bases: Vec<String>,
}

type Found = Vec<(String, Option<glob::Pattern>)>;

impl ReadSearch<'_> {
    /// The error for `name`, which reaches `target` out of the workspace.
    fn out_of(&self, name: &str, target: &std::path::Path, how: &str) -> Error {
        let from = self.from;
        let text = self
            .obs
            .read_to_string(&self.ws.root.join(from))
            .unwrap_or_default();
        let line = text
            .lines()
            .position(|l| l.contains(name))
            .map_or(1, |i| i + 1);
        Error::input_at(
            crate::error::Location::at_line(from, &text, line),
            format!(
                "{} reads '{name}', {how} ({})",
                self.layer.label,
                target.display()
            ),
        )
        .with_hint(
            "Ansible reads it on the machine running the build, so a fresh clone or another runner would build something else; copy the file into the workspace (the role's files/ or templates/) and name it relatively",
        )
    }

    /// Looks for one name (trimmed) in the bases it may be under.
    fn resolve(&self, name: &str, found: &mut Found, missing: &mut BTreeSet<String>) -> Result<()> {
        if name.is_empty() {
            return Ok(());
        }
        // `playbook_dir + '/x'`, `role_path ~ '/x'`: one base only.
        let (raw, only): (&str, Option<&str>) =
            if let Some(rest) = name.strip_prefix("@playbook_dir/") {
                (rest, Some(self.pdir))
            } else if let Some(rest) = name.strip_prefix("@role_path/") {
                match self.role {
                    Some(r) => (rest, Some(r)),
                    // No role: `role_path` is undefined, nothing is read.
                    None => return Ok(()),
                }
            } else {
                (name, None)
            };
        // A glob is found from its literal directory and counts the files
        // it matches there (a new match changes the digest; a file beside
        // them does not): `rest` is the part from that directory on.
        let (name, rest): (String, Option<&str>) = match reads::glob_dir(raw) {
            Some(d) if d.is_empty() => (".".to_string(), Some(raw)),
            Some(d) => {
                let rest = &raw[d.len()..];
                (d, Some(rest.trim_start_matches('/')))
            }
            None => (raw.trim_end_matches('/').to_string(), None),
        };
        if name.starts_with('/') {
            let p = std::path::Path::new(&name);
            if p.starts_with(&self.ws.root) {
                return Err(self.out_of(
                    &name,
                    p,
                    "an absolute path into this checkout (another clone would read this one)",
                ));
            }
            return Err(self.out_of(
                &name,
                p,
                "an absolute path on the machine running the build",
            ));
        }
        match only {
            Some(base) => self.resolve_in(base, &name, rest, found, missing),
            None => self
                .bases
                .iter()
                .try_for_each(|base| self.resolve_in(base, &name, rest, found, missing)),
        }
    }

    /// Looks for `name` (a glob's literal directory, the glob's `rest`
    /// after it) under `base`.
    fn resolve_in(
        &self,
        base: &str,
        name: &str,
        rest: Option<&str>,
        found: &mut Found,
        missing: &mut BTreeSet<String>,
    ) -> Result<()> {
        let (obs, ws) = (self.obs, self.ws);
        let Some(cand) = normalize_rel(&format!("{base}/{name}")) else {
            let full = ws.root.join(base).join(name);
            if obs.exists(&full) {
                return Err(self.out_of(name, &full, "a path that leads out of the workspace"));
            }
            return Ok(());
        };
        if cand == "." && name != "." {
            return Ok(());
        }
        let full = ws.root.join(&cand);
        let indexed = self.index.under(&cand).next().is_some();
        if !indexed && !obs.exists(&full) {
            return Ok(());
        }
        // Through a link out of the workspace?
        if let Ok(real) = obs.canonicalize(&full)
            && !real.starts_with(&ws.root)
            && !ws.allow_outside.iter().any(|a| real.starts_with(a))
        {
            return Err(self.out_of(name, &real, "through a symbolic link out of the workspace"));
        }
        if indexed || self.tried.contains(&cand) {
            self.push_found(cand, rest, found);
        } else {
            missing.insert(cand);
        }
        Ok(())
    }

    /// `cand` found: a directory that is a link counts as a link, and the
    /// glob (or the whole directory) is taken where it leads.
    fn push_found(&self, mut cand: String, rest: Option<&str>, found: &mut Found) {
        for _ in 0..40 {
            match self.index.link(&cand) {
                Some(LinkTarget::Inside(t)) if t != "." => {
                    found.push((cand.clone(), None));
                    cand = t.clone();
                }
                _ => break,
            }
        }
        // The glob anchored where its directory was found; one that
        // does not parse counts the whole directory.
        let glob = rest.and_then(|rest| {
            let anchored = if cand == "." {
                rest.to_string()
            } else {
                format!("{cand}/{rest}")
            };
            glob::Pattern::new(&anchored).ok()
        });
        found.push((cand, glob));
    }
}

/// Counts what [`resolve_reads`] found: each directory's files (those a
/// glob matches, for a glob) as read by the play.
fn add_reads(
    index: &FileIndex,
    found: &[(String, Option<glob::Pattern>)],
    files: &mut BTreeMap<String, FileInput>,
) {
    for (rel, glob) in found {
        for (p, h) in index.under(rel).filter(|(p, _)| glob_matches(glob, p)) {
            files.entry(p.clone()).or_insert_with(|| FileInput {
                hash: h.hash,
                mode: h.mode.clone(),
                origin: "play".into(),
            });
        }
    }
}

/// A link counts as a link; what it leads to inside the workspace counts
/// too, with the link's origin (over-approximate: Ansible follows links).
/// True when files were added.
fn follow_links(index: &FileIndex, files: &mut BTreeMap<String, FileInput>) -> bool {
    let before = files.len();
    let mut queue: Vec<(String, std::sync::Arc<str>)> = files
        .iter()
        .filter(|(_, f)| f.mode == "120000")
        .map(|(p, f)| (p.clone(), f.origin.clone()))
        .collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while let Some((link, origin)) = queue.pop() {
        let Some(LinkTarget::Inside(target)) = index.link(&link) else {
            continue;
        };
        if target == "." || !seen.insert(target.clone()) {
            continue;
        }
        for (p, h) in index.under(target) {
            if files.contains_key(p) {
                continue;
            }
            files.insert(
                p.clone(),
                FileInput {
                    hash: h.hash,
                    mode: h.mode.clone(),
                    origin: origin.clone(),
                },
            );
            if h.mode == "120000" {
                queue.push((p.clone(), origin.clone()));
            }
        }
    }
    files.len() > before
}

/// Does `path` (workspace-relative) match the glob, as Python's `glob`
/// (which Ansible's `fileglob` uses) matches it: `*` stops at `/` and
/// does not match a leading dot? No glob: everything below matches.
fn glob_matches(glob: &Option<glob::Pattern>, path: &str) -> bool {
    glob.as_ref().is_none_or(|g| {
        g.matches_with(
            path,
            glob::MatchOptions {
                case_sensitive: true,
                require_literal_separator: true,
                require_literal_leading_dot: true,
            },
        )
    })
}

/// Analyses the play's files (YAML and templates) for the variables they
/// use and the files they read by name, adding those files to `files` until
/// nothing new is read. A read whose name is known only at run time makes
/// every file of the source count. `Err(paths)`: files to index first.
#[allow(clippy::too_many_arguments)]
fn play_files(
    obs: &Observer,
    ws: &Workspace,
    layer: &Layer,
    inputs: &LayerInputs,
    files: &mut BTreeMap<String, FileInput>,
    index: &FileIndex,
    tried: &BTreeSet<String>,
    notes: &mut Vec<String>,
    analyzer: &vars::Analyzer,
) -> Result<std::result::Result<vars::VarUse, BTreeSet<String>>> {
    let mut used = vars::VarUse::default();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut missing: BTreeSet<String> = BTreeSet::new();
    let mut whole = inputs.whole_source.is_some();
    loop {
        let pending: Vec<String> = files
            .iter()
            .filter(|(p, f)| {
                // A link is read through its target, which counts on its own.
                f.mode != "120000"
                    && !done.contains(*p)
                    && (matches!(&*f.origin, "playbook" | "play" | "source")
                        || f.origin.starts_with("role:"))
            })
            .map(|(p, _)| p.clone())
            .collect();
        if pending.is_empty() {
            break;
        }
        for path in pending {
            done.insert(path.clone());
            let jinja = index.get(&path).is_some_and(|h| h.jinja);
            let u = analyzer.file(obs, &ws.root, &path, jinja)?;
            if !u.reads.is_empty() {
                let found = resolve_reads(
                    obs,
                    ws,
                    layer,
                    inputs,
                    &path,
                    &u.reads,
                    index,
                    tried,
                    &mut missing,
                )?;
                add_reads(index, &found, files);
            }
            if let (Some(reason), false) = (&u.read_unresolved, whole) {
                whole = true;
                if add_whole_workspace(layer, index, files) {
                    whole_workspace_note(layer, reason, index, notes);
                } else {
                    missing.insert(WHOLE_WORKSPACE.into());
                }
            }
            used.merge_file(&u);
        }
    }
    if !missing.is_empty() {
        return Ok(Err(missing));
    }
    Ok(Ok(used))
}

/// Variables Ansible and its connection read of themselves, whether the
/// play names them or not: `ansible_*` (connection, interpreter, become...)
/// and Mitogen's `mitogen_*` (`mitogen_task_isolation` runs each module in
/// a fresh fork, so what one task leaves in the interpreter's process no
/// longer reaches the next; `mitogen_via`...).
fn read_by_ansible(name: &str) -> bool {
    name.starts_with("ansible_") || name.starts_with("mitogen_")
}

/// Mitogen's variable naming a host to reach the layer's host through.
const MITOGEN_VIA: &str = "mitogen_via";

/// The variables the layer's play uses: names referenced by its YAML and
/// templates, plus every `ansible_*` and `mitogen_*` variable (Ansible and
/// Mitogen read those themselves),
/// closed over the definitions of those names in the inventory, beside the
/// playbook and in the system's vars.
fn variables_closed(
    system: Option<&System>,
    layer: &Layer,
    mut used: vars::VarUse,
    model: Option<&inventory::InventoryModel>,
    play_model: Option<&inventory::InventoryModel>,
    analyzer: &vars::Analyzer,
) -> (vars::VarUse, vars::VarUse) {
    let mut value_reads = vars::VarUse::default();
    let host = layer.label.slug();
    let groups = model
        .cloned()
        .unwrap_or_default()
        .effective_groups(&layer.groups, &host);
    // (definition, its workspace-relative file)
    let mut visible: Vec<(&inventory::VarDef, String)> = vec![];
    for m in [model, play_model].into_iter().flatten() {
        for d in &m.defs {
            if inventory::InventoryModel::visible(&d.scope, &groups, &host) {
                let path = match d.file.strip_prefix("//") {
                    Some(p) => p.to_string(),
                    None => format!("{}/{}", m.base, d.file),
                };
                visible.push((d, path));
            }
        }
    }
    for (d, _) in &visible {
        if read_by_ansible(&d.name) {
            used.names.insert(d.name.clone());
        }
    }
    // The system's too: their values are followed like the inventory's.
    for name in system.iter().flat_map(|s| s.vars.keys()) {
        if read_by_ansible(name) {
            used.names.insert(name.clone());
        }
    }
    // `mitogen_via` routes the connection through another inventory host,
    // whose variables (its connection, address, user, become settings)
    // Mitogen reads: every variable of the inventory counts.
    if used.fallback.is_none()
        && (visible.iter().any(|(d, _)| d.name == MITOGEN_VIA)
            || system.is_some_and(|s| s.vars.contains_key(MITOGEN_VIA)))
    {
        used.fallback = Some(format!(
            "{MITOGEN_VIA} is set: Mitogen reaches the host through another inventory host"
        ));
    }
    let mut queue: Vec<String> = used.names.iter().cloned().collect();
    while let Some(name) = queue.pop() {
        let mut found = vars::VarUse::default();
        for (d, path) in visible.iter().filter(|(d, _)| d.name == name) {
            found.merge(&analyzer.value(&d.value, path));
        }
        if let Some(v) = system.and_then(|s| s.vars.get(&name)) {
            found.merge(&analyzer.value(v, "Layerfile.toml"));
        }
        for n in &found.names {
            if used.names.insert(n.clone()) {
                queue.push(n.clone());
            }
        }
        if used.fallback.is_none() {
            used.fallback = found.fallback;
        }
        value_reads.reads.extend(found.reads);
        if value_reads.read_unresolved.is_none() {
            value_reads.read_unresolved = found.read_unresolved;
        }
    }
    (used, value_reads)
}

/// Paths the layer's play reads (files it names, its roles' task, handler,
/// meta, defaults and vars files, directories it copies) or its setup
/// commands copy, that lead out of the workspace through a symbolic link:
/// builds would depend on host files a fresh clone lacks, so they are bad
/// input unless the target lies in an `allow_outside` directory. A link the
/// play never reads is only a link (its target string counts).
fn check_links_out(
    obs: &Observer,
    ws: &Workspace,
    layer: &Layer,
    inputs: &LayerInputs,
    index: &FileIndex,
) -> Result<()> {
    let out_of = |rel: &str, target: &std::path::Path, how: &str| {
        link_out_error(obs, layer, rel, target, how)
    };
    let allowed = |real: &std::path::Path| {
        real.starts_with(&ws.root) || ws.allow_outside.iter().any(|a| real.starts_with(a))
    };
    let named = inputs
        .referenced
        .iter()
        .chain(&inputs.extra_files)
        .map(|r| (r, "reads it"))
        .chain(
            inputs
                .setup_refs
                .iter()
                .map(|r| (r, "copies it in a setup command")),
        )
        .chain(inputs.roles.values().map(|r| (r, "uses it as a role")));
    // The last directory reached with no link on the way: the paths come
    // mostly sorted, and each of its files then needs one step, not one
    // per directory above it.
    let mut clear: Option<(&str, std::path::PathBuf)> = None;
    for (rel, how) in named {
        let parent = rel.rsplit_once('/').map(|(p, _)| p);
        let linked = match (&clear, parent) {
            (Some((dir, full)), Some(p)) if *dir == p => {
                obs.through_link_in(full, &rel[p.len() + 1..])
            }
            _ => {
                let linked = obs.through_link(&ws.root, rel);
                if !linked && let Some(p) = parent {
                    clear = Some((p, ws.root.join(p)));
                }
                linked
            }
        };
        // No link on the way: inside the workspace (no realpath needed).
        if !linked {
            continue;
        }
        if let Ok(real) = obs.canonicalize(&ws.root.join(rel))
            && !allowed(&real)
        {
            return Err(out_of(rel, &real, how));
        }
    }
    match links_out_below(inputs, index) {
        Some((p, real)) => Err(out_of(&p, &real, "reads it")),
        None => Ok(()),
    }
}

/// The error for `rel`, which leads out of the workspace to `target`.
fn link_out_error(
    obs: &Observer,
    layer: &Layer,
    rel: &str,
    target: &std::path::Path,
    how: &str,
) -> Error {
    let dir = if obs.is_dir(target) {
        target.to_path_buf()
    } else {
        target
            .parent()
            .map_or_else(|| target.to_path_buf(), std::path::Path::to_path_buf)
    };
    Error::input_at(
        crate::error::Location::file(rel),
        format!(
            "{rel} leads out of the workspace, to {}, through a symbolic link, and {} {how}",
            target.display(),
            layer.label
        ),
    )
    .with_hint(format!(
        "Ansible and cp follow links, so builds would depend on host files a fresh clone does not have; copy the target into the workspace, or allow the directory explicitly with [workspace] allow_outside = [\"{}\"]",
        dir.display()
    ))
}

/// A link leading out of the workspace below what the play reads whole,
/// and where it leads.
fn links_out_below(
    inputs: &LayerInputs,
    index: &FileIndex,
) -> Option<(String, std::path::PathBuf)> {
    // Links below what the play reads whole: a directory it copies, the
    // files Ansible loads from each role (none to find when the index
    // holds no link leading out).
    if !index
        .links()
        .values()
        .any(|t| matches!(t, LinkTarget::Outside(_)))
    {
        return None;
    }
    let mut dirs: Vec<String> = inputs.referenced.iter().cloned().collect();
    for dir in inputs.roles.values() {
        for sub in ["tasks", "handlers", "meta", "defaults", "vars"] {
            dirs.push(format!("{dir}/{sub}"));
        }
    }
    for dir in &dirs {
        for (p, h) in index.under(dir) {
            if h.mode == "120000"
                && let Some(LinkTarget::Outside(real)) = index.link(p)
            {
                return Some((p.clone(), real.clone()));
            }
        }
    }
    None
}

/// Workspace paths named in setup commands (which run on the host with the
/// workspace as working directory): `cp -a overlay/. {root}/` makes
/// `overlay` an input even when `inputs` forgets it. Words of `sh -c '...'`
/// are split again; globs are expanded; `dir/.` is `dir`. Read as the
/// command runs for the workspace's architecture: `cp -a overlay-{arch}/.
/// {root}/` (or `overlay-$LAYERBUILD_ARCH`) names `overlay-aarch64` in an
/// aarch64 build.
fn setup_references(obs: &Observer, ws: &Workspace, layer: &Layer) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for cmd in &layer.setup {
        let cmd = arch_variables(&ws.arch.expand(cmd), ws.arch);
        command_paths(obs, ws, &cmd, 0, &mut out);
    }
    out
}

/// `cmd` with the architecture variables setup commands get
/// (`$LAYERBUILD_ARCH`, `${LAYERBUILD_DEBIAN_ARCH}`...) replaced by their
/// values for `arch`, as the shell running it replaces them.
fn arch_variables(cmd: &str, arch: crate::arch::Arch) -> String {
    let vars = [
        ("LAYERBUILD_ARCH", arch.name()),
        ("LAYERBUILD_DEBIAN_ARCH", arch.debian()),
    ];
    let mut out = String::with_capacity(cmd.len());
    let mut rest = cmd;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let braced = after.strip_prefix('{');
        let name_of = |s: &str| {
            let end = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            s[..end].to_string()
        };
        let (name, used) = match braced {
            Some(b) => {
                let name = name_of(b);
                match b[name.len()..].starts_with('}') {
                    true => (name.clone(), name.len() + 2),
                    false => (String::new(), 0),
                }
            }
            None => {
                let name = name_of(after);
                let used = name.len();
                (name, used)
            }
        };
        match vars.iter().find(|(n, _)| *n == name) {
            Some((_, value)) => {
                out.push_str(value);
                rest = &after[used..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn command_paths(
    obs: &Observer,
    ws: &Workspace,
    cmd: &str,
    depth: usize,
    out: &mut BTreeSet<String>,
) {
    let words = shell_words::split(cmd)
        .unwrap_or_else(|_| cmd.split_whitespace().map(str::to_string).collect());
    for w in words {
        if depth < 4 && w.contains(char::is_whitespace) {
            command_paths(obs, ws, &w, depth + 1, out);
            continue;
        }
        let w = w.split_once('=').map_or(w.as_str(), |(_, v)| v);
        if w.is_empty()
            || w.starts_with('-')
            || w.starts_with('/')
            || w.contains("{root}")
            || w.contains("..")
        {
            continue;
        }
        let mut w = w.trim_start_matches("./").to_string();
        while w.ends_with("/.") || w.ends_with('/') {
            w.truncate(w.len() - if w.ends_with("/.") { 2 } else { 1 });
        }
        if w.is_empty() || w == "." {
            continue;
        }
        if w.contains(['*', '?', '[']) {
            for p in obs.glob(&ws.root.join(&w).to_string_lossy()) {
                if let Ok(rel) = p.strip_prefix(&ws.root) {
                    out.insert(rel.to_string_lossy().into_owned());
                }
            }
        } else if obs.exists(&ws.root.join(&w)) {
            out.insert(w);
        }
    }
}

/// The workspace directories `SOURCE/ansible.cfg` points Ansible at
/// (modules, plugins, collections, roles), and why every variable counts
/// if it names plugin directories. Read as Ansible reads it (Python's
/// configparser): `=` or `:` between key and value, keys in any case,
/// `;` or `#` after whitespace starting a comment, indented lines
/// continuing a value. A directory outside the workspace that exists is
/// an error naming the line (its content cannot count), unless
/// `[workspace] allow_outside` names it; one that does not exist is
/// skipped, as Ansible skips it.
fn ansible_cfg_paths(
    obs: &Observer,
    ws: &Workspace,
    source: &str,
) -> Result<(BTreeSet<String>, Option<String>)> {
    let mut out = BTreeSet::new();
    let mut plugins = None;
    let cfg = ws.root.join(source).join("ansible.cfg");
    let Ok(text) = obs.read_to_string(&cfg) else {
        return Ok((out, None));
    };
    let rel_cfg = ws.display_path(&cfg);
    for (key, value, line) in cfg_entries(&text) {
        let pathy = key.ends_with("_plugins")
            || matches!(
                key.as_str(),
                "library"
                    | "module_utils"
                    | "collections_path"
                    | "collections_paths"
                    | "collections_scan_sys_path"
                    | "roles_path"
            );
        if !pathy {
            continue;
        }
        for part in value.split([':', '\n']) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            // Ansible's `resolve_path`: `{{CWD}}` is the directory it runs
            // in, then environment variables and `~` are expanded.
            let expanded = expand_cfg_path(part, &ws.root.join(source));
            if part.contains('$') || part.starts_with("~/") {
                // Where it points depends on the environment, which the
                // memo's record does not hold: no memo for this run.
                obs.give_up(format!(
                    "{rel_cfg}:{line} names a directory through the environment ({part})"
                ));
            }
            let part = expanded.as_str();
            let full = if let Some(rest) = part.strip_prefix("~/") {
                match std::env::var_os("HOME") {
                    Some(home) => std::path::PathBuf::from(home).join(rest),
                    None => continue,
                }
            } else {
                ws.root.join(source).join(part)
            };
            let Ok(canon) = obs.canonicalize(&full) else {
                // Not there: Ansible skips it too (its appearing is seen
                // by the memo through this lookup).
                continue;
            };
            match canon.strip_prefix(&ws.root) {
                Ok(rel) => {
                    let rel = rel.to_string_lossy().into_owned();
                    let rel = if rel.is_empty() { ".".into() } else { rel };
                    if key.ends_with("_plugins") && plugins.is_none() {
                        plugins = Some(format!(
                            "{rel_cfg}:{line} sets {key} = {part}: plugins can read any variable"
                        ));
                    }
                    out.insert(rel);
                }
                Err(_) if ws.allow_outside.iter().any(|a| canon.starts_with(a)) => {}
                Err(_) => {
                    return Err(Error::input_at(
                        crate::error::Location::at_line(&rel_cfg, &text, line),
                        format!(
                            "{key} = {part} points Ansible at {}, outside the workspace: what it holds cannot count for the layers that run here",
                            canon.display()
                        ),
                    )
                    .with_hint(format!(
                        "copy it into the workspace and name the copy, or allow the directory explicitly with [workspace] allow_outside = [\"{}\"]",
                        canon.display()
                    )));
                }
            }
        }
    }
    Ok((out, plugins))
}

/// An `ansible.cfg` path as Ansible resolves it: `{{CWD}}` replaced by
/// the directory ansible-playbook runs in, `$VAR` and `${VAR}` by the
/// environment (left as written when unset, as `os.path.expandvars` does).
fn expand_cfg_path(part: &str, cwd: &std::path::Path) -> String {
    static VAR: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
            .expect("valid regex")
    });
    let s = part.replace("{{CWD}}", &cwd.to_string_lossy());
    VAR.replace_all(&s, |c: &regex::Captures| {
        let name = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
        std::env::var(name).unwrap_or_else(|_| c[0].to_string())
    })
    .into_owned()
}

/// `(key in lower case, value, line)` of an INI text, as configparser
/// reads it (sections are not told apart: any section's path keys count).
fn cfg_entries(text: &str) -> Vec<(String, String, usize)> {
    let mut out: Vec<(String, String, usize)> = vec![];
    let strip_comment = |v: &str| -> String {
        let mut end = v.len();
        for (i, c) in v.char_indices() {
            if (c == ';' || c == '#') && (i == 0 || v[..i].ends_with(char::is_whitespace)) {
                end = i;
                break;
            }
        }
        v[..end].trim().to_string()
    };
    for (i, raw) in text.lines().enumerate() {
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if raw.starts_with(char::is_whitespace)
            && let Some(last) = out.last_mut()
        {
            // A continuation line of the last value.
            last.1.push('\n');
            last.1.push_str(&strip_comment(t));
            continue;
        }
        if t.starts_with('[') {
            continue;
        }
        let Some(at) = t.find(['=', ':']) else {
            continue;
        };
        let key = t[..at].trim().to_ascii_lowercase();
        out.push((key, strip_comment(&t[at + 1..]), i + 1));
    }
    out
}

#[cfg(test)]
mod arch_tests {
    use super::arch_variables;
    use crate::arch::Arch;

    #[test]
    fn architecture_variables_read_as_the_shell_reads_them() {
        let a = Arch::Aarch64;
        assert_eq!(
            arch_variables("cp -a o-$LAYERBUILD_ARCH/. {root}/", a),
            "cp -a o-aarch64/. {root}/"
        );
        assert_eq!(
            arch_variables("x-${LAYERBUILD_DEBIAN_ARCH}.deb $LAYERBUILD_ROOT $", a),
            "x-arm64.deb $LAYERBUILD_ROOT $"
        );
        assert_eq!(
            arch_variables("$LAYERBUILD_ARCHIVE ${LAYERBUILD_ARCH", a),
            "$LAYERBUILD_ARCHIVE ${LAYERBUILD_ARCH"
        );
    }
}
