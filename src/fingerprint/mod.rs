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
//! I/O: reads workspace files (via [`files`] and [`ansible`]); nothing else.

pub mod ansible;
pub mod files;
pub mod inventory;
pub mod observe;
pub mod statcache;
pub mod vars;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::label::Label;
use crate::workspace::{Layer, Parent, System, Workspace};
use files::{FileHash, FileIndex, LinkTarget};
use observe::Observer;

/// Bump when the meaning of a manifest changes, so every digest changes.
pub const FORMAT_VERSION: u32 = 3;

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
    Layer { label: String, digest: String },
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInput {
    pub hash: String,
    pub mode: String,
    /// `playbook`, `source`, `role:NAME`, `inventory`, `script`, `input`,
    /// `packages_file`, `setup`, or `play` (a file outside the source the play reads).
    pub origin: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fingerprint {
    pub label: Label,
    pub digest: String,
    pub manifest: Manifest,
    /// Inventory variables file by file, with values, for explanations only.
    #[serde(skip)]
    pub vars: inventory::VarSnapshot,
    /// Workspace-relative directory the manifest's inventory files are relative to.
    #[serde(skip)]
    pub inventory: Option<String>,
    /// The values of the system's `secret_vars` (system vars and inventory
    /// definitions), to redact from logs and messages.
    #[serde(skip)]
    pub secrets: crate::secrets::Secrets,
    /// Only the digest is known (served by the memo): the manifest is
    /// empty and must never be recorded; fingerprint again for more.
    #[serde(skip)]
    pub light: bool,
}

impl Fingerprint {
    /// A digest without its manifest (see [`Fingerprint::light`]). The
    /// manifest's format 0 is refused by the cache's writers.
    pub fn light(label: Label, digest: String) -> Fingerprint {
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
            secrets: Default::default(),
            light: true,
        }
    }
}

impl Manifest {
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a manifest always serialises");
        blake3::hash(&bytes).to_hex().to_string()
    }
}

/// Per-layer results of the analysis that does not depend on parents.
struct LayerInputs {
    roles: BTreeMap<String, String>,
    extra_files: BTreeSet<String>,
    /// Files and directories the play names (inputs whatever .gitignore says).
    referenced: BTreeSet<String>,
    /// Why every variable counts, known before reading the play (ansible.cfg plugins).
    var_fallback: Option<String>,
    setup_refs: BTreeSet<String>,
    notes: Vec<String>,
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
    fingerprint_observed(ws, system, labels, stat, &Observer::new())
}

/// [`fingerprint_with`], recording every file-system access in `obs` (for
/// the memo: [`crate::cache::memo`]).
pub fn fingerprint_observed(
    ws: &Workspace,
    system: Option<&System>,
    labels: &[Label],
    mut stat: Option<&mut statcache::StatCache>,
    obs: &Observer,
) -> Result<BTreeMap<Label, Fingerprint>> {
    let mut analysed: BTreeMap<&Label, LayerInputs> = BTreeMap::new();
    let mut roots: BTreeSet<String> = BTreeSet::new();
    let mut explicit: BTreeSet<String> = BTreeSet::new();
    let inventory = system.and_then(|s| s.inventory.clone());

    for label in labels {
        let layer = &ws.layers[label];
        let mut inputs = LayerInputs {
            roles: BTreeMap::new(),
            extra_files: BTreeSet::new(),
            referenced: BTreeSet::new(),
            var_fallback: None,
            setup_refs: setup_references(obs, ws, layer),
            notes: vec![],
        };
        if let (Some(source), Some(playbook)) = (&layer.source, &layer.playbook) {
            let found = ansible::discover(obs, &ws.root, source, playbook, &layer.roles_path)?;
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
            let (cfg_paths, plugins) = ansible_cfg_paths(obs, ws, source);
            inputs.referenced.extend(cfg_paths);
            inputs.var_fallback = plugins;
            inputs.notes.extend(found.notes);
            // Ansible reads the inventory whatever .gitignore says.
            if let Some(inv) = &inventory {
                explicit.insert(inv.clone());
                if !obs.is_dir(&ws.root.join(inv)) {
                    // group_vars/, host_vars/ and files the play may read
                    // through inventory_dir live beside an inventory file.
                    let parent = std::path::Path::new(inv)
                        .parent()
                        .map(|p| p.to_string_lossy().into_owned())
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| ".".into());
                    explicit.insert(parent);
                }
            }
            explicit.insert(format!("{source}/{playbook}"));
        }
        roots.extend(layer.source.iter().cloned());
        roots.extend(inputs.roles.values().cloned());
        explicit.extend(layer.scripts.iter().cloned());
        explicit.extend(layer.inputs.iter().cloned());
        explicit.extend(layer.packages_file.iter().cloned());
        explicit.extend(inputs.extra_files.iter().cloned());
        explicit.extend(inputs.referenced.iter().cloned());
        explicit.extend(inputs.setup_refs.iter().cloned());
        analysed.insert(label, inputs);
    }

    let mut index = FileIndex::build_allowing(
        obs,
        &ws.root,
        &roots,
        &explicit,
        &ws.cache_dir,
        &ws.allow_outside,
        stat.as_deref_mut(),
    )?;
    // Ansible follows symlinks: the target of a link inside the workspace
    // is an input too (whatever .gitignore says), as are its own links'.
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
            break;
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
    for label in labels {
        check_links_out(obs, ws, &ws.layers[label], &analysed[label], &index)?;
    }
    let any_play = labels.iter().any(|l| ws.layers[l].playbook.is_some());
    let model = match &inventory {
        Some(inv) if any_play => {
            let is_dir = obs.is_dir(&ws.root.join(inv));
            let base = if is_dir {
                inv.clone()
            } else {
                std::path::Path::new(inv)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| ".".into())
            };
            let files: Vec<String> = if is_dir {
                index.under(inv).map(|(p, _)| p.clone()).collect()
            } else {
                index
                    .under(&base)
                    .map(|(p, _)| p.clone())
                    .filter(|p| p == inv || p.contains("group_vars/") || p.contains("host_vars/"))
                    .collect()
            };
            Some(inventory::InventoryModel::load(
                obs,
                &ws.root,
                inv,
                is_dir,
                files.iter(),
            ))
        }
        _ => None,
    };
    let mut inventory_vars = match &model {
        Some(m) => {
            let files: Vec<String> = index.under(&m.base).map(|(p, _)| p.clone()).collect();
            inventory::snapshot(obs, &ws.root, files.iter())
        }
        None => Default::default(),
    };
    // Secret values never reach the snapshot (kept for `why --show-values`).
    let mut secrets = crate::secrets::Secrets::default();
    if let Some(s) = system {
        for (k, v) in &s.vars {
            if s.secret_vars.contains(k) {
                secrets.add(v);
            }
        }
        crate::secrets::strip_snapshot(&mut inventory_vars, &s.secret_vars, &mut secrets);
    }
    let mut analyzer = vars::Analyzer::default();

    let mut out: BTreeMap<Label, Fingerprint> = BTreeMap::new();
    for label in labels {
        let layer = &ws.layers[label];
        let inputs = &analysed[label];
        let parent = match &layer.parent {
            Parent::Scratch => ParentInput::Scratch,
            Parent::Image(r) => ParentInput::Image {
                reference: r.clone(),
            },
            Parent::Layer(p) => ParentInput::Layer {
                label: p.to_string(),
                digest: out.get(p).map(|f| f.digest.clone()).ok_or_else(|| {
                    Error::env(format!(
                        "internal: {p} fingerprinted after its child {label}"
                    ))
                })?,
            },
        };
        let manifest = build_manifest(
            obs,
            ws,
            system,
            layer,
            inputs,
            &index,
            parent,
            model.as_ref(),
            &mut analyzer,
        )?;
        let digest = manifest.digest();
        let runs_play = layer.playbook.is_some() && model.is_some();
        let vars = if runs_play {
            inventory_vars.clone()
        } else {
            Default::default()
        };
        out.insert(
            label.clone(),
            Fingerprint {
                label: label.clone(),
                digest,
                manifest,
                vars,
                inventory: model.as_ref().filter(|_| runs_play).map(|m| m.base.clone()),
                secrets: secrets.clone(),
                light: false,
            },
        );
    }
    Ok(out)
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
    analyzer: &mut vars::Analyzer,
) -> Result<Manifest> {
    let mut files: BTreeMap<String, FileInput> = BTreeMap::new();
    let mut add = |path: &str, h: &FileHash, origin: String| {
        files.entry(path.to_string()).or_insert_with(|| FileInput {
            hash: h.hash.clone(),
            mode: h.mode.clone(),
            origin,
        });
    };
    let runs_play = layer.playbook.is_some();

    // Role files first, so a role inside the source directory is labelled as a role.
    for (name, dir) in &inputs.roles {
        for (p, h) in index.under(dir) {
            add(p, h, format!("role:{name}"));
        }
    }
    if let Some(source) = &layer.source {
        let playbook = layer.playbook.as_ref().map(|pb| format!("{source}/{pb}"));
        if let Some(pb) = &playbook
            && let Some(h) = index.get(pb)
        {
            add(pb, h, "playbook".into());
        }
        let role_dirs: Vec<String> = layer.roles_path.iter().map(|rp| format!("{rp}/")).collect();
        for (p, h) in index.under(source) {
            // Roles the play does not use do not count.
            if !role_dirs.iter().any(|rp| p.starts_with(rp.as_str())) {
                add(p, h, "source".into());
            }
        }
    }
    for p in &inputs.extra_files {
        if let Some(h) = index.get(p) {
            add(p, h, "play".into());
        }
    }
    for r in &inputs.referenced {
        for (p, h) in index.under(r) {
            add(p, h, "play".into());
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
        for rel in list {
            for (p, h) in index.under(rel) {
                if origin == "script" {
                    add(p, h, origin.into());
                } else {
                    // Host commands copy these with their permissions.
                    let kept = FileHash {
                        mode: h.copied_mode(),
                        ..h.clone()
                    };
                    add(p, &kept, origin.into());
                }
            }
        }
    }
    if let Some(pf) = &layer.packages_file
        && let Some(h) = index.get(pf)
    {
        add(pf, h, "packages_file".into());
    }
    // A link counts as a link; what it leads to inside the workspace counts
    // too, with the link's origin (over-approximate: Ansible follows links).
    let mut queue: Vec<(String, String)> = files
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
                    hash: h.hash.clone(),
                    mode: h.mode.clone(),
                    origin: origin.clone(),
                },
            );
            if h.mode == "120000" {
                queue.push((p.clone(), origin.clone()));
            }
        }
    }
    let mut notes = inputs.notes.clone();
    let mut inventory_vars: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut inventory_groups = vec![];
    let mut system_vars: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    if runs_play {
        let mut used = variables_used(obs, ws, system, layer, &files, index, model, analyzer)?;
        if used.fallback.is_none() {
            used.fallback.clone_from(&inputs.var_fallback);
        }
        let whole = used.fallback.is_some();
        if let Some(reason) = &used.fallback {
            notes.push(format!("all inventory variables count because {reason}"));
        }
        let counts =
            |name: &str| whole || used.names.contains(name) || name.starts_with("ansible_");
        if let Some(s) = system {
            system_vars = s
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
        if let Some(m) = model {
            let host = layer.label.slug();
            let groups = m.effective_groups(&layer.groups, &host);
            inventory_groups = groups.iter().cloned().collect();
            for d in &m.defs {
                if (whole || inventory::InventoryModel::visible(&d.scope, &groups, &host))
                    && counts(&d.name)
                {
                    inventory_vars
                        .entry(d.name.clone())
                        .or_default()
                        .insert(d.file.clone(), d.hash.clone());
                }
            }
            if whole {
                // Other hosts, groups and files of the inventory may be read
                // (hostvars, groups, inventory_dir): every file counts whole.
                for (path, h) in index.under(&m.base) {
                    files.entry(path.clone()).or_insert_with(|| FileInput {
                        hash: h.hash.clone(),
                        mode: h.mode.clone(),
                        origin: "inventory".into(),
                    });
                }
            }
            for (path, scope, why) in &m.opaque {
                if (whole || inventory::InventoryModel::visible(scope, &groups, &host))
                    && let Some(h) = index.get(path)
                {
                    files.entry(path.clone()).or_insert_with(|| FileInput {
                        hash: h.hash.clone(),
                        mode: h.mode.clone(),
                        origin: "inventory".into(),
                    });
                    notes.push(format!("{path} counts whole: {why}"));
                }
            }
        }
    }

    let definition = Definition {
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
            layer
                .ansible_connection
                .clone()
                .unwrap_or_else(|| ws.build.ansible_connection.clone())
        }),
    };
    Ok(Manifest {
        format: FORMAT_VERSION,
        label: layer.label.to_string(),
        parent,
        definition,
        packages: layer.packages.clone(),
        files,
        vars: system_vars,
        inventory_vars,
        inventory_groups,
        notes,
    })
}

/// The variables the layer's play uses: names referenced by its YAML and
/// templates, plus every `ansible_*` variable (Ansible reads those itself),
/// closed over the definitions of those names in the inventory and the
/// system's vars.
#[allow(clippy::too_many_arguments)]
fn variables_used(
    obs: &Observer,
    ws: &Workspace,
    system: Option<&System>,
    layer: &Layer,
    files: &BTreeMap<String, FileInput>,
    index: &FileIndex,
    model: Option<&inventory::InventoryModel>,
    analyzer: &mut vars::Analyzer,
) -> Result<vars::VarUse> {
    let mut used = vars::VarUse::default();
    for (path, f) in files {
        // A link is read through its target, which counts on its own.
        if f.mode == "120000" {
            continue;
        }
        if matches!(f.origin.as_str(), "playbook" | "play" | "source")
            || f.origin.starts_with("role:")
        {
            let jinja = index.get(path).is_some_and(|h| h.jinja);
            used.merge(&analyzer.file(obs, &ws.root, path, jinja)?);
        }
    }
    let host = layer.label.slug();
    let groups = model
        .map(|m| m.effective_groups(&layer.groups, &host))
        .unwrap_or_default();
    let visible: Vec<&inventory::VarDef> = model
        .map(|m| {
            m.defs
                .iter()
                .filter(|d| inventory::InventoryModel::visible(&d.scope, &groups, &host))
                .collect()
        })
        .unwrap_or_default();
    for d in &visible {
        if d.name.starts_with("ansible_") {
            used.names.insert(d.name.clone());
        }
    }
    let mut queue: Vec<String> = used.names.iter().cloned().collect();
    while let Some(name) = queue.pop() {
        let mut found = vars::VarUse::default();
        for d in visible.iter().filter(|d| d.name == name) {
            let path = format!(
                "{}/{}",
                model.map(|m| m.base.as_str()).unwrap_or("."),
                d.file
            );
            found.merge(&analyzer.value(&d.value, &path));
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
    }
    Ok(used)
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
    for (rel, how) in named {
        if let Ok(real) = obs.canonicalize(&ws.root.join(rel))
            && !allowed(&real)
        {
            return Err(out_of(rel, &real, how));
        }
    }
    // Links below what the play reads whole: a directory it copies, the
    // files Ansible loads from each role.
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
                return Err(out_of(p, real, "reads it"));
            }
        }
    }
    Ok(())
}

/// Workspace paths named in setup commands (which run on the host with the
/// workspace as working directory): `cp -a overlay/. {root}/` makes
/// `overlay` an input even when `inputs` forgets it. Words of `sh -c '...'`
/// are split again; globs are expanded; `dir/.` is `dir`.
fn setup_references(obs: &Observer, ws: &Workspace, layer: &Layer) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for cmd in &layer.setup {
        command_paths(obs, ws, cmd, 0, &mut out);
    }
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

/// Directories an `ansible.cfg` in the source points Ansible at (plugins,
/// modules, collections): inputs, and plugins make the variable analysis
/// give up (a `*_plugins` directory is read as code that may use any variable).
fn ansible_cfg_paths(
    obs: &Observer,
    ws: &Workspace,
    source: &str,
) -> (BTreeSet<String>, Option<String>) {
    let mut out = BTreeSet::new();
    let mut plugins = None;
    let cfg = ws.root.join(source).join("ansible.cfg");
    let Ok(text) = obs.read_to_string(&cfg) else {
        return (out, None);
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        let pathy = k.ends_with("_plugins")
            || matches!(
                k,
                "library"
                    | "module_utils"
                    | "collections_path"
                    | "collections_paths"
                    | "roles_path"
            );
        if !pathy {
            continue;
        }
        for part in v.split(':') {
            let part = part.split('#').next().unwrap_or("").trim();
            if part.is_empty() || part.starts_with('/') || part.starts_with('~') {
                continue;
            }
            let full = ws.root.join(source).join(part);
            let Ok(canon) = obs.canonicalize(&full) else {
                continue;
            };
            if let Ok(rel) = canon.strip_prefix(&ws.root) {
                let rel = rel.to_string_lossy().into_owned();
                if k.ends_with("_plugins") && plugins.is_none() {
                    plugins = Some(format!(
                        "{source}/ansible.cfg sets {k} = {part}: plugins can read any variable"
                    ));
                }
                out.insert(rel);
            }
        }
    }
    (out, plugins)
}
