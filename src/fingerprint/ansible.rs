//! Which roles (and which files outside the source directory) a layer's play
//! uses, found statically from its playbook.
//!
//! Followed: `roles:` of every play, `include_role`/`import_role` with literal
//! names in tasks, handlers and blocks, literal `include_tasks`/`import_tasks`
//! and `import_playbook`, `meta/main.yml` dependencies, and role task and
//! handler files. Whenever a name is templated (`{{ ... }}`) the analysis
//! cannot know the answer, so it falls back to "every role counts" and says
//! why: over-approximate, never under. A file read by a name known only at
//! run time (a module's `src`, a vars file) may lie anywhere below the
//! playbook's directory, roles included: the whole source and every role
//! count.
//!
//! Files a task names are resolved with Ansible's search path: the task
//! file's directory and its `files/`, `templates/` (`vars/` for
//! `include_vars`), the role's, then the playbook's. A play imported from
//! another directory uses that directory (roles/, files/, templates/,
//! vars/, `playbook_dir`, code and variable directories beside it). A path
//! that leads out of the workspace (absolute, `..`, or through a symbolic
//! link) is an error at the line naming it.
//!
//! Tasks are read the way Ansible reads them: `action:`/`local_action:`
//! strings as their module, free-form `k=v` arguments, FQCN and
//! `ansible.legacy.` keys. A task that runs on the controller
//! (`delegate_to: localhost`, `local_action`, `connection: local`, a play on
//! localhost) may read any file there: the whole source counts.
//!
//! I/O: reads YAML files of the source directory and roles.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use yaml_rust2::Yaml;

use super::observe::Observer;
use crate::error::{Error, Location, Result};

/// What a play needs, as workspace-relative paths.
#[derive(Debug, Default)]
pub struct PlayInputs {
    /// Role name -> role directory.
    pub roles: BTreeMap<String, String>,
    /// Why every role of the roles path counts, if the analysis had to give up.
    pub all_roles_reason: Option<String>,
    /// Files the play names that lie outside the source directory.
    pub extra_files: BTreeSet<String>,
    /// Every existing workspace file or directory the play names (by a
    /// relative path, a `k=v` argument, a literal inside Jinja, or the
    /// literal directory of a templated path): inputs whatever .gitignore
    /// says, since Ansible will read them.
    pub referenced: BTreeSet<String>,
    /// Every YAML file the play loads (playbooks, task files, role meta,
    /// vars files), workspace-relative.
    pub read: BTreeSet<String>,
    /// Why every file of the workspace counts (a file the play
    /// reads whose name the analysis cannot know), with the file and line.
    pub whole_source: Option<String>,
    /// Why every variable counts (the analysis cannot bound what the play
    /// uses), with the file and line.
    pub all_vars_reason: Option<String>,
    /// `group_vars/` and `host_vars/` beside the playbook: Ansible loads
    /// them (over the inventory's), so they count by variable.
    pub var_dirs: BTreeSet<String>,
    /// The playbook's directory, workspace-relative.
    pub playbook_dir: String,
    /// Why the files the play reads count their exact permissions, with
    /// the file and line: a `copy` or `template` task may keep a file's
    /// permissions (`mode: preserve`, a mode or arguments known only at run
    /// time, `module_defaults` setting a mode), or a `synchronize` task
    /// does (rsync's archive mode).
    pub keeps_modes: Option<String>,
    pub notes: Vec<String>,
}

/// A YAML file's text and documents (or its syntax error as
/// `LINE\0COLUMN\0MESSAGE`), or why it could not be read.
type LoadedYaml = std::result::Result<(String, std::result::Result<Vec<Yaml>, String>), String>;

/// Modules whose `src` is read on the machine running the play.
const READ_MODULES: &[&str] = &["copy", "template", "script", "unarchive", "assemble"];
/// Modules whose `src` names something on the managed node (a link target,
/// a device), not a controller file.
const REMOTE_SRC_MODULES: &[&str] = &["file", "mount", "ansible.posix.mount", "filesystem"];
/// Hosts that are the machine running the play.
const CONTROLLER_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// Modules that read no controller file even when run there
/// (`include_vars` reads are followed; included tasks and roles inherit
/// the delegation, so they are not safe).
const CONTROLLER_SAFE: &[&str] = &[
    "debug",
    "set_fact",
    "assert",
    "fail",
    "meta",
    "pause",
    "add_host",
    "group_by",
    "set_stats",
    "include_vars",
];
/// Whether a `delegate_to` target may be the controller: localhost, or a
/// name known only at run time.
fn controller_host(d: &str) -> bool {
    CONTROLLER_HOSTS.contains(&d.trim()) || templated(d)
}

/// Task keywords: every other key of a task names its module.
const TASK_KEYWORDS: &[&str] = &[
    "name",
    "when",
    "register",
    "loop",
    "loop_control",
    "args",
    "vars",
    "tags",
    "become",
    "become_user",
    "become_method",
    "become_flags",
    "become_exe",
    "delegate_to",
    "delegate_facts",
    "run_once",
    "ignore_errors",
    "ignore_unreachable",
    "changed_when",
    "failed_when",
    "until",
    "retries",
    "delay",
    "notify",
    "listen",
    "environment",
    "no_log",
    "check_mode",
    "diff",
    "any_errors_fatal",
    "throttle",
    "timeout",
    "connection",
    "collections",
    "module_defaults",
    "debugger",
    "async",
    "poll",
    "remote_user",
    "port",
    "block",
    "rescue",
    "always",
];
/// Directories of code Ansible loads from beside a playbook and from each role.
const CODE_DIRS: &[&str] = &["library", "module_utils", "collections"];

const ROLE_KEYS: &[&str] = &[
    "include_role",
    "import_role",
    "ansible.builtin.include_role",
    "ansible.builtin.import_role",
    "ansible.legacy.include_role",
    "ansible.legacy.import_role",
];
const TASK_FILE_KEYS: &[&str] = &[
    "include_tasks",
    "import_tasks",
    "include",
    "ansible.builtin.include_tasks",
    "ansible.builtin.import_tasks",
    "ansible.builtin.include",
    "ansible.legacy.include_tasks",
    "ansible.legacy.import_tasks",
    "ansible.legacy.include",
];
/// At play level (`include` there is the old playbook include).
const PLAYBOOK_KEYS: &[&str] = &[
    "import_playbook",
    "ansible.builtin.import_playbook",
    "ansible.legacy.import_playbook",
    "include",
    "ansible.builtin.include",
    "ansible.legacy.include",
];
const VARS_FILE_KEYS: &[&str] = &[
    "include_vars",
    "ansible.builtin.include_vars",
    "ansible.legacy.include_vars",
];
const BLOCK_KEYS: &[&str] = &["block", "rescue", "always"];
const PLAY_TASK_LISTS: &[&str] = &["pre_tasks", "tasks", "post_tasks", "handlers"];

fn templated(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Does `y` hold a `module_defaults` (of a play, block, task or role)
/// that may set a module's `mode`: a `mode` key anywhere in it, or a
/// value known only at run time (over-approximate: any module, any mode)?
fn module_defaults_set_mode(y: &Yaml) -> bool {
    fn may_set(y: &Yaml) -> bool {
        match y {
            Yaml::String(s) => templated(s),
            Yaml::Array(a) => a.iter().any(may_set),
            Yaml::Hash(h) => h
                .iter()
                .any(|(k, v)| k.as_str() == Some("mode") || k.as_str() == Some("<<") || may_set(v)),
            Yaml::Alias(_) => true,
            _ => false,
        }
    }
    match y {
        Yaml::Array(a) => a.iter().any(module_defaults_set_mode),
        Yaml::Hash(h) => h.iter().any(|(k, v)| {
            (k.as_str() == Some("module_defaults") && may_set(v)) || module_defaults_set_mode(v)
        }),
        _ => false,
    }
}

/// Ansible's free-form arguments: `k=v` words (a plain identifier before
/// the `=`) and the other words joined, as `include_tasks: file=x.yml` or
/// `include: x.yml a=1` give them.
fn free_form(s: &str) -> (BTreeMap<String, String>, String) {
    let mut args = BTreeMap::new();
    let mut rest: Vec<String> = vec![];
    for w in split_args(s) {
        match w.split_once('=') {
            Some((k, v)) if is_identifier(k) => {
                args.insert(k.to_string(), unquote(v).to_string());
            }
            _ => rest.push(w),
        }
    }
    (args, rest.join(" "))
}

/// Splits module arguments at white space outside quotes and Jinja
/// (`src={{ a ~ 'b c' }} dest=/x` is two words), as Ansible's `split_args`.
fn split_args(s: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match (c, quote) {
            ('{', _) if matches!(next, Some('{' | '%' | '#')) => {
                depth += 1;
                cur.push(c);
                cur.push(next.unwrap_or_default());
                i += 2;
                continue;
            }
            ('}' | '%' | '#', _) if depth > 0 && next == Some('}') => {
                depth -= 1;
                cur.push(c);
                cur.push('}');
                i += 2;
                continue;
            }
            ('\'' | '"', None) if depth == 0 => quote = Some(c),
            (q, Some(open)) if q == open && depth == 0 => quote = None,
            (w, None) if w.is_whitespace() && depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        cur.push(c);
        i += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn is_identifier(k: &str) -> bool {
    !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit())
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// A task's module key and arguments (the first key that is not a task
/// keyword).
fn task_module(task: &Yaml) -> Option<(String, Yaml)> {
    task.as_hash()?.iter().find_map(|(k, v)| {
        let k = k.as_str()?;
        (!TASK_KEYWORDS.contains(&k) && !k.starts_with("with_")).then(|| (k.to_string(), v.clone()))
    })
}

/// A task written `action: MODULE ARGS` or `local_action: MODULE ARGS`
/// (or with `module:` in a mapping), rewritten as `MODULE: ARGS`; a
/// `local_action` gets `delegate_to: localhost`. `None` for other tasks.
fn action_task(task: &Yaml) -> Option<Yaml> {
    let h = task.as_hash()?;
    for (key, local) in [("action", false), ("local_action", true)] {
        let (m, args) = match &task[key] {
            Yaml::String(s) => {
                let s = s.trim_start();
                let (m, rest) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
                (m.to_string(), Yaml::String(rest.trim().to_string()))
            }
            Yaml::Hash(a) => {
                let Some(m) = task[key]["module"].as_str() else {
                    continue;
                };
                let mut rest = a.clone();
                rest.remove(&Yaml::String("module".into()));
                (m.to_string(), Yaml::Hash(rest))
            }
            _ => continue,
        };
        let mut out = h.clone();
        out.remove(&Yaml::String(key.into()));
        out.insert(Yaml::String(m), args);
        if local {
            out.insert(
                Yaml::String("delegate_to".into()),
                Yaml::String("localhost".into()),
            );
        }
        return Some(Yaml::Hash(out));
    }
    None
}

/// The file an include names: its free-form name, `file=`, or `file:`
/// (in the value or in the task's `args:`).
fn include_target(v: &Yaml, task: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => {
            let (args, rest) = free_form(s);
            args.get("file")
                .or_else(|| args.get("_raw_params"))
                .cloned()
                .or_else(|| (!rest.is_empty()).then_some(rest))
        }
        _ => v["file"]
            .as_str()
            .or_else(|| v["_raw_params"].as_str())
            .or_else(|| task["args"]["file"].as_str())
            .map(str::to_string),
    }
}

enum Work {
    Playbook(PathBuf),
    /// A task file, with the directory of the playbook whose play runs it.
    Tasks(PathBuf, PathBuf),
}

/// A directory, the current play's directory, and how many roles and play
/// directories were known (see `Discovery::bases_memo`).
type BasesKey = (std::ffi::OsString, std::ffi::OsString, usize, usize);

struct Discovery<'a> {
    obs: &'a Observer,
    root: &'a Path,
    source: String,
    roles_path: &'a [String],
    playbook_dir: PathBuf,
    out: PlayInputs,
    queue: VecDeque<Work>,
    seen_files: BTreeSet<PathBuf>,
    /// Role names waiting to be resolved, with where they were named and
    /// the directory of the playbook whose play uses them.
    pending_roles: VecDeque<(String, PathBuf, PathBuf)>,
    /// The text of each YAML file loaded (for line numbers).
    texts: BTreeMap<PathBuf, String>,
    allow_outside: &'a [PathBuf],
    /// The first path the play reads from outside the workspace.
    error: Option<Error>,
    /// The directory of each playbook of the `import_playbook` chain (the
    /// base Ansible resolves that play's relative names against), found
    /// before the plays are scanned.
    play_dirs: BTreeSet<PathBuf>,
    /// The directory of the playbook whose play is being scanned: Ansible
    /// resolves a play's roles, `files/`, `templates/` and `playbook_dir`
    /// from the playbook that holds it, imported or not.
    cur_play: PathBuf,
    /// Scanning a block that runs on the controller (`delegate_to:
    /// localhost`, `connection: local`).
    local: bool,
    /// Candidates already resolved, by directory, play, name and how: the
    /// same strings recur in a file ("0644", "directory", a template name)
    /// and resolve the same way.
    resolved: std::collections::HashSet<
        (std::ffi::OsString, std::ffi::OsString, String, u8),
        foldhash::fast::RandomState,
    >,
    /// [`Discovery::bases`] by directory and play, with the number of roles
    /// and play directories known when computed (both only grow).
    bases_memo: HashMap<BasesKey, std::rc::Rc<Vec<PathBuf>>, foldhash::fast::RandomState>,
    /// Whether each search-path directory is a directory (recorded by the
    /// observer the first time): a name cannot be found below one that is
    /// not, and most of the search path does not exist.
    is_dir_memo: HashMap<std::ffi::OsString, bool, foldhash::fast::RandomState>,
}

/// Discovers the inputs of `playbook` (relative to `source`).
pub fn discover(
    obs: &Observer,
    root: &Path,
    source: &str,
    playbook: &str,
    roles_path: &[String],
    allow_outside: &[PathBuf],
) -> Result<PlayInputs> {
    let pb = normalize(&root.join(source).join(playbook));
    let mut d = Discovery {
        texts: BTreeMap::new(),
        allow_outside,
        error: None,
        obs,
        root,
        source: source.to_string(),
        roles_path,
        playbook_dir: pb.parent().unwrap_or(root).to_path_buf(),
        out: PlayInputs::default(),
        queue: VecDeque::from([Work::Playbook(pb.clone())]),
        seen_files: BTreeSet::new(),
        pending_roles: VecDeque::new(),
        play_dirs: BTreeSet::new(),
        cur_play: pb.parent().unwrap_or(root).to_path_buf(),
        local: false,
        resolved: Default::default(),
        bases_memo: Default::default(),
        is_dir_memo: Default::default(),
    };
    d.find_play_dirs(&pb);
    d.drain()?;
    d.code_dirs();
    d.var_dirs();
    d.reads_from_other_play_dirs();
    if let Some(e) = d.error {
        return Err(e);
    }
    d.out.playbook_dir = d.rel(&d.playbook_dir);
    if d.out.playbook_dir.is_empty() {
        d.out.playbook_dir = ".".into();
    }
    Ok(d.out)
}

impl Discovery<'_> {
    /// Works through the queue of playbooks and task files, and the roles
    /// they name, until both are empty.
    fn drain(&mut self) -> Result<()> {
        loop {
            if let Some(work) = self.queue.pop_front() {
                match work {
                    Work::Playbook(p) => {
                        self.cur_play = p.parent().unwrap_or(self.root).to_path_buf();
                        self.scan_playbook(&p)?
                    }
                    Work::Tasks(p, play) => {
                        self.cur_play = play;
                        if let Some(docs) = self.load(&p)? {
                            for doc in &docs {
                                self.scan_tasks(doc, &p);
                            }
                        }
                    }
                }
                continue;
            }
            if let Some((name, from, play)) = self.pending_roles.pop_front() {
                self.cur_play = play;
                self.resolve_role(&name, &from)?;
                continue;
            }
            break;
        }
        Ok(())
    }

    /// Code and variables Ansible loads from beside the playbook and from
    /// each role without a task naming them.
    fn code_dirs(&mut self) {
        let mut dirs: Vec<PathBuf> = vec![self.playbook_dir.clone()];
        dirs.extend(self.play_dirs.iter().cloned());
        dirs.extend(self.out.roles.values().map(|r| self.root.join(r)));
        for dir in dirs {
            let Ok(names) = self.obs.read_dir(&dir) else {
                continue;
            };
            for n in names.iter() {
                let n = n.to_string_lossy();
                if CODE_DIRS.contains(&n.as_ref()) || n.ends_with("_plugins") {
                    let p = dir.join(n.as_ref());
                    if self.obs.is_dir(&p) {
                        let rel = self.rel(&p);
                        self.out.referenced.insert(rel);
                    }
                }
            }
        }
    }

    /// `group_vars/` and `host_vars/` beside the playbook, and beside a
    /// playbook it imports from another directory.
    fn var_dirs(&mut self) {
        for sub in ["group_vars", "host_vars"] {
            let p = self.playbook_dir.join(sub);
            if self.obs.is_dir(&p) {
                let rel = self.rel(&p);
                self.out.var_dirs.insert(rel);
            }
            // Beside a playbook imported from another directory (loaded for
            // its plays): counted whole, each of their variables may count.
            let others: Vec<PathBuf> = self
                .play_dirs
                .iter()
                .filter(|p| **p != self.playbook_dir)
                .map(|p| p.join(sub))
                .filter(|p| self.obs.is_dir(p))
                .collect();
            for p in others {
                let rel = self.rel(&p);
                self.out.referenced.insert(rel.clone());
                if self.out.all_vars_reason.is_none() {
                    self.out.all_vars_reason = Some(format!(
                        "{rel}/ is loaded beside an imported playbook (its definitions override the inventory's)"
                    ));
                }
            }
        }
    }

    fn rel(&self, p: &Path) -> String {
        if is_normal(p)
            && let Some(rest) = below_bytes(p, self.root)
        {
            return String::from_utf8_lossy(rest).into_owned();
        }
        p.strip_prefix(self.root)
            .unwrap_or(p)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Records a file the play reads that the source directory and the
    /// roles paths do not already cover.
    fn note_outside(&mut self, rel: &str) {
        let inside = |dir: &str| dir == "." || rel.starts_with(&format!("{dir}/"));
        if !inside(&self.source) && !self.roles_path.iter().any(|r| inside(r)) {
            self.out.extra_files.insert(rel.to_string());
        }
    }

    fn give_up(&mut self, reason: String) {
        // A templated name may lead to any role or to any file beside the playbook.
        self.whole_source(reason.clone());
        if self.out.all_roles_reason.is_none() {
            self.out.all_roles_reason = Some(reason);
        }
    }

    fn whole_source(&mut self, reason: String) {
        if self.out.whole_source.is_none() {
            self.out.whole_source = Some(reason);
        }
    }

    /// `file:line` of the first line of `file` holding `needle`.
    fn at(&self, file: &Path, needle: &str) -> (String, usize) {
        let rel = self.rel(file);
        let text = self.texts.get(&normalize(file)).map_or("", String::as_str);
        let needle = needle.lines().next().unwrap_or(needle).trim();
        let line = text
            .lines()
            .position(|l| !needle.is_empty() && l.contains(needle))
            .map_or(1, |i| i + 1);
        (rel, line)
    }

    fn location(&self, file: &Path, needle: &str) -> Location {
        let (rel, line) = self.at(file, needle);
        let text = self.texts.get(&normalize(file)).map_or("", String::as_str);
        Location::at_line(&rel, text, line)
    }

    /// Loads a YAML file once. Files that do not exist are not ours to judge
    /// here (Ansible reports them); a YAML syntax error is bad input.
    fn load(&mut self, path: &Path) -> Result<Option<Vec<Yaml>>> {
        let path = normalize(path);
        if !self.seen_files.insert(path.clone()) || !self.obs.is_file(&path) {
            return Ok(None);
        }
        // Read and parsed once per run, whichever layer asks first.
        let loaded = self.obs.derived(&path, || load_yaml(self.obs, &path));
        let rel = self.rel(&path);
        let (text, docs) = match &*loaded {
            Ok(l) => l,
            Err(e) => return Err(Error::io(&path, std::io::Error::other(e.clone()))),
        };
        self.note_outside(&rel);
        if path.starts_with(self.root) {
            self.out.read.insert(rel.clone());
        }
        self.texts.insert(path.clone(), text.clone());
        let docs = docs.clone().map_err(|e| {
            let mut parts = e.splitn(3, '\0');
            let line: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
            let col: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let info = parts.next().unwrap_or_default();
            let mut loc = Location::at_line(&rel, text, line);
            loc.column = Some(col + 1);
            Error::input_at(loc, format!("YAML syntax error: {info}"))
                .with_hint("ansible-playbook would reject this file too; fix the YAML")
        })?;
        for doc in &docs {
            self.path_scalars(doc, &path, None);
        }
        if self.out.keeps_modes.is_none() && docs.iter().any(module_defaults_set_mode) {
            let (rel, line) = self.at(&path, "module_defaults");
            self.out.keeps_modes = Some(format!(
                "{rel}:{line}: module_defaults may give copy or template a mode (mode: preserve keeps the files' permissions)"
            ));
        }
        Ok(Some(docs))
    }

    /// Strings that name existing workspace files or directories are inputs
    /// (see [`PlayInputs::referenced`]). Ansible resolves relative paths
    /// against several directories, so every plausible base is tried
    /// (over-approximate).
    fn path_scalars(&mut self, y: &Yaml, file: &Path, key: Option<&str>) {
        match y {
            Yaml::String(s) if s.len() < 4096 => {
                for (cand, dir_ok) in candidates(s, key) {
                    self.resolve_candidate(&cand, file, dir_ok, s);
                }
                // What a file lookup reads, with this file's search path (a
                // task file's own files/ and templates/ included); a glob
                // by its directory.
                if templated(s) {
                    for name in super::reads::jinja_reads(s).names {
                        // `playbook_dir` is the directory of the playbook
                        // holding the play (imported or not); `role_path`
                        // is resolved with the role elsewhere.
                        let name = match name.strip_prefix("@playbook_dir/") {
                            Some(rest) => rest.to_string(),
                            None if name.starts_with('@') => continue,
                            None => name,
                        };
                        match super::reads::glob_dir(&name) {
                            Some(_) => self.resolve_glob(&name, file, s),
                            None => self.resolve_candidate(&name, file, true, s),
                        }
                    }
                }
            }
            Yaml::Array(a) => a.iter().for_each(|v| self.path_scalars(v, file, key)),
            Yaml::Hash(h) => h
                .iter()
                .for_each(|(k, v)| self.path_scalars(v, file, k.as_str())),
            _ => {}
        }
    }

    fn resolve_candidate(&mut self, cand: &str, file: &Path, dir_ok: bool, original: &str) {
        let cand = cand.trim();
        if cand.is_empty() || cand == "." || cand.contains('\n') {
            return;
        }
        let dir = file.parent().unwrap_or(self.root);
        let how = u8::from(dir_ok)
            | (u8::from(original.contains("playbook_dir")) << 1)
            | (u8::from(original.contains("role_path")) << 2);
        // Keyed by the paths' bytes (`Path`'s own hash walks components).
        if !self.resolved.insert((
            dir.as_os_str().to_owned(),
            self.cur_play.as_os_str().to_owned(),
            cand.to_string(),
            how,
        )) {
            return;
        }
        let role_dir = dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.to_path_buf());
        let mut bases = self.bases_memoised(dir);
        let mut cand = cand.to_string();
        if original.contains("playbook_dir") || original.contains("role_path") {
            let bases = std::rc::Rc::make_mut(&mut bases);
            cand = cand.trim_start_matches('/').to_string();
            if original.contains("role_path") {
                bases.insert(0, role_dir.clone());
            }
            if original.contains("playbook_dir") {
                let plays = self.plays();
                bases.splice(0..0, plays);
            }
        }
        if Path::new(&cand).is_absolute() {
            return;
        }
        // Below a missing directory nothing is found (the observer recorded
        // that directory's absence); a `..` may lead out of it.
        let descends = !cand.split('/').any(|c| c == "..");
        for base in bases.iter() {
            if descends && !self.is_dir_memoised(base) {
                continue;
            }
            let p = normalized(base.join(&cand));
            if !strictly_below(&p, self.root) {
                continue;
            }
            if self.obs.is_file(&p) || (dir_ok && self.obs.is_dir(&p)) {
                self.reference(&p, file, original);
            }
        }
    }

    /// The files a glob read by a lookup matches, from every directory of
    /// the search path: each match counts, and the directories the glob
    /// looked in are recorded as listed (a new match changes the memo's
    /// record), but a file beside the matches does not count.
    fn resolve_glob(&mut self, pattern: &str, file: &Path, original: &str) {
        let dir = file.parent().unwrap_or(self.root);
        for base in self.bases(dir) {
            let full = normalize(&base.join(pattern));
            if !full.starts_with(self.root) {
                continue;
            }
            for p in self.obs.glob(&full.to_string_lossy()) {
                if self.obs.is_file(&p) {
                    self.reference(&p, file, original);
                }
            }
        }
    }

    /// An existing workspace path the play (may) read, named by `needle`
    /// in `file`: an input, unless it leads out of the workspace through a
    /// symbolic link (Ansible follows it), which is an error at the line
    /// that names it.
    fn reference(&mut self, p: &Path, file: &Path, needle: &str) {
        let rel = self.rel(p);
        if self.error.is_none()
            && self.obs.through_link(self.root, &rel)
            && let Ok(real) = self.obs.canonicalize(p)
            && !real.starts_with(self.root)
            && !self.allow_outside.iter().any(|a| real.starts_with(a))
        {
            let loc = self.location(file, needle);
            self.error = Some(
                Error::input_at(
                    loc,
                    format!(
                        "{rel} leads out of the workspace, to {}, through a symbolic link, and the play reads it ('{needle}')",
                        real.display()
                    ),
                )
                .with_hint(format!(
                    "Ansible follows links, so builds would depend on host files a fresh clone does not have; copy the target into the workspace (the role's files/ or templates/), or allow the directory explicitly with [workspace] allow_outside = [\"{}\"]",
                    real.parent().unwrap_or(&real).display()
                )),
            );
        }
        self.out.referenced.insert(rel);
    }

    /// Where Ansible looks for a relative name used in a file of `dir`: the
    /// file's directory, its role's `templates/`, `files/` and directory,
    /// then the playbook's directory, its `files/` and `templates/`.
    /// A task file outside a role searches its own directory's `files/`
    /// and `templates/` too (a task file in `tasks/`, an imported playbook
    /// in `plays/`), and a task file below a role's `tasks/` the role's.
    /// [`Discovery::bases`], computed once per directory and play.
    fn bases_memoised(&mut self, dir: &Path) -> std::rc::Rc<Vec<PathBuf>> {
        let key = (
            dir.as_os_str().to_owned(),
            self.cur_play.as_os_str().to_owned(),
            self.out.roles.len(),
            self.play_dirs.len(),
        );
        if let Some(b) = self.bases_memo.get(&key) {
            return b.clone();
        }
        let b = std::rc::Rc::new(self.bases(dir));
        self.bases_memo.insert(key, b.clone());
        b
    }

    /// `Observer::is_dir`, asked once per directory by this discovery.
    fn is_dir_memoised(&mut self, dir: &Path) -> bool {
        if let Some(&b) = self.is_dir_memo.get(dir.as_os_str()) {
            return b;
        }
        let b = self.obs.is_dir(dir);
        self.is_dir_memo.insert(dir.as_os_str().to_owned(), b);
        b
    }

    fn bases(&self, dir: &Path) -> Vec<PathBuf> {
        let role_dir = dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.to_path_buf());
        let mut out = vec![
            dir.to_path_buf(),
            dir.join("templates"),
            dir.join("files"),
            role_dir.join("templates"),
            role_dir.join("files"),
            role_dir.clone(),
        ];
        if let Some(role) = self.role_of(&dir.join("_")) {
            let role = self.root.join(role);
            if role != role_dir {
                out.extend([role.join("templates"), role.join("files"), role]);
            }
        }
        for p in self.plays() {
            out.extend([p.clone(), p.join("files"), p.join("templates")]);
        }
        out
    }

    /// The directories a play's names may be relative to: the current
    /// play's playbook directory, then every other one of the chain (a
    /// role or task file shared by plays of several directories is
    /// scanned once).
    fn plays(&self) -> Vec<PathBuf> {
        let mut out = vec![self.cur_play.clone()];
        for p in std::iter::once(&self.playbook_dir).chain(&self.play_dirs) {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }

    /// A read in a template (or another file the play reads that is not
    /// one of its YAML files, which [`Discovery::load`] sees) is resolved
    /// by the caller against the top playbook's directory only: with
    /// playbooks imported from other directories, `playbook_dir + '/x'`
    /// and relative names are resolved against each of them too.
    fn reads_from_other_play_dirs(&mut self) {
        if self.play_dirs.iter().all(|p| *p == self.playbook_dir) {
            return;
        }
        let mut done: BTreeSet<PathBuf> = BTreeSet::new();
        loop {
            let mut roots: Vec<PathBuf> =
                self.out.roles.values().map(|r| self.root.join(r)).collect();
            roots.extend(self.out.referenced.iter().map(|r| self.root.join(r)));
            let mut files: BTreeSet<PathBuf> = BTreeSet::new();
            for r in roots {
                if self.obs.is_dir(&r) {
                    files.extend(self.obs.files_below(&r));
                } else {
                    files.insert(r);
                }
            }
            files.retain(|f| !done.contains(f));
            if files.is_empty() {
                return;
            }
            done.extend(files.iter().cloned());
            self.reads_in(files);
        }
    }

    /// See [`Discovery::reads_from_other_play_dirs`].
    fn reads_in(&mut self, files: BTreeSet<PathBuf>) {
        for f in files {
            if self.obs.metadata(&f).is_ok_and(|m| m.len() > 1 << 20) {
                continue;
            }
            let Ok(text) = self.obs.read_to_string(&f) else {
                continue;
            };
            for name in super::reads::jinja_reads(&text).names {
                let (rest, subs): (&str, &[&str]) = match name.strip_prefix("@playbook_dir/") {
                    Some(rest) => (rest, &[""]),
                    None if name.starts_with('@') || Path::new(&name).is_absolute() => continue,
                    None => (&name, &["", "files", "templates", "vars"]),
                };
                let rest = match super::reads::glob_dir(rest) {
                    Some(d) => d,
                    None => rest.to_string(),
                };
                for p in self.plays() {
                    for sub in subs {
                        if sub.is_empty() && rest.is_empty() {
                            // `*.conf`: the listing of files/ or templates/.
                            continue;
                        }
                        let c = normalize(&p.join(sub).join(&rest));
                        if c.starts_with(self.root) && c != self.root && self.obs.exists(&c) {
                            self.reference(&c, &f, &name);
                        }
                    }
                }
            }
        }
    }

    /// Every playbook of the `import_playbook` chain, by directory, before
    /// any play is scanned (see [`Discovery::plays`]).
    fn find_play_dirs(&mut self, top: &Path) {
        let mut queue = VecDeque::from([normalize(top)]);
        let mut seen = BTreeSet::new();
        while let Some(pb) = queue.pop_front() {
            if !seen.insert(pb.clone()) || !self.obs.is_file(&pb) {
                continue;
            }
            let dir = pb.parent().unwrap_or(self.root).to_path_buf();
            self.play_dirs.insert(dir.clone());
            let loaded = self.obs.derived(&pb, || load_yaml(self.obs, &pb));
            let Ok((_, Ok(docs))) = &*loaded else {
                continue;
            };
            for play in docs.iter().filter_map(Yaml::as_vec).flatten() {
                for key in PLAYBOOK_KEYS {
                    if let Some(t) = include_target(&play[*key], play).filter(|t| !templated(t)) {
                        queue.push_back(normalize(&dir.join(t.trim())));
                    }
                }
            }
        }
    }

    /// The `src` of a module that reads it on the machine running the play
    /// (`copy`, `template`, `script`, `unarchive`, `assemble`, unless the
    /// source is remote, and the `src` of any other module but those whose
    /// `src` lies on the managed node): counted when inside the workspace,
    /// rejected when outside, the whole source when only known at run
    /// time. A task run on the controller (`delegate_to: localhost`,
    /// `local_action:`, `connection: local`) may read any file there: the
    /// whole source counts.
    fn read_module(&mut self, task: &Yaml, file: &Path) {
        let Some((key, value)) = task_module(task) else {
            return;
        };
        let m = key
            .strip_prefix("ansible.builtin.")
            .or_else(|| key.strip_prefix("ansible.legacy."))
            .unwrap_or(&key)
            .to_string();
        let m = m.as_str();
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        let mut free: Option<String> = None;
        let scalar = |y: &Yaml| match y {
            Yaml::String(s) => Some(s.clone()),
            Yaml::Boolean(b) => Some(b.to_string()),
            Yaml::Integer(i) => Some(i.to_string()),
            Yaml::Real(r) => Some(r.clone()),
            _ => None,
        };
        let from_hash = |y: &Yaml, args: &mut BTreeMap<String, String>| {
            if let Some(h) = y.as_hash() {
                for (k, v) in h {
                    if let (Some(k), Some(v)) = (k.as_str(), scalar(v)) {
                        args.insert(k.to_string(), v);
                    }
                }
            }
        };
        match &value {
            Yaml::String(s) => {
                for w in split_args(s) {
                    match w.split_once('=') {
                        Some((k, v)) if is_identifier(k) => {
                            args.insert(k.to_string(), unquote(v).to_string());
                        }
                        _ if free.is_none() => free = Some(unquote(&w).to_string()),
                        _ => {}
                    }
                }
            }
            y => from_hash(y, &mut args),
        }
        from_hash(&task["args"], &mut args);
        self.keeps_modes(task, &key, m, (&value, &args, free.as_deref()), file);
        let on_controller = self.local
            || task["delegate_to"].as_str().is_some_and(controller_host)
            || task["connection"].as_str() == Some("local");
        if on_controller && !CONTROLLER_SAFE.contains(&m) {
            let (rel, line) = self.at(file, &key);
            self.whole_source(format!(
                "{rel}:{line}: {key} runs on the machine running the play, where it may read any file"
            ));
        }
        let truthy = |k: &str| {
            args.get(k).is_some_and(|v| {
                matches!(v.to_ascii_lowercase().as_str(), "yes" | "true" | "1" | "on")
            })
        };
        let falsy = |k: &str| {
            args.get(k).is_some_and(|v| {
                matches!(
                    v.to_ascii_lowercase().as_str(),
                    "no" | "false" | "0" | "off"
                )
            })
        };
        let remote = match m {
            "copy" => truthy("remote_src"),
            "unarchive" => truthy("remote_src") || falsy("copy"),
            // assemble reads the managed node unless told otherwise.
            "assemble" => !falsy("remote_src"),
            _ if !READ_MODULES.contains(&m) => {
                truthy("remote_src") || REMOTE_SRC_MODULES.contains(&m)
            }
            _ => false,
        };
        if remote {
            return;
        }
        let src = args.get("src").cloned().or_else(|| {
            if m != "script" {
                return None;
            }
            free.clone().or_else(|| {
                args.get("cmd")
                    .and_then(|c| c.split_whitespace().next().map(str::to_string))
            })
        });
        if let Some(src) = src {
            if !READ_MODULES.contains(&m) && !templated(&src) && Path::new(&src).is_absolute() {
                // Most likely a path on the managed node: not judged here.
                return;
            }
            self.read_path(&src, &key, task, file);
        }
    }

    /// Notes the first task that may copy files with their own permissions
    /// (`synchronize`; `copy` or `template` with `mode: preserve`, a mode
    /// known only at run time, or no literal mode and arguments known only
    /// at run time): then every file the play reads counts its exact
    /// permissions. `value`, `args` and `free`: the module's value and
    /// arguments as [`Discovery::read_module`] read them.
    fn keeps_modes(
        &mut self,
        task: &Yaml,
        key: &str,
        m: &str,
        (value, args, free): (&Yaml, &BTreeMap<String, String>, Option<&str>),
        file: &Path,
    ) {
        if matches!(m, "synchronize" | "ansible.posix.synchronize")
            && self.out.keeps_modes.is_none()
        {
            // rsync's archive mode (the default) keeps permissions.
            let (rel, line) = self.at(file, key);
            self.out.keeps_modes = Some(format!(
                "{rel}:{line}: {key} may keep the permissions of the files it copies"
            ));
        }
        if matches!(m, "copy" | "template") && self.out.keeps_modes.is_none() {
            let why = match args.get("mode") {
                Some(v) if v.trim() == "preserve" => Some("mode: preserve"),
                Some(v) if templated(v) => Some("a mode known only at run time"),
                Some(_) => None,
                // No literal mode: one may come from arguments known
                // only at run time, or a YAML merge the parser keeps as is.
                None if task["args"].as_str().is_some()
                    || free.is_some_and(templated)
                    || !value["<<"].is_badvalue()
                    || !task["args"]["<<"].is_badvalue() =>
                {
                    Some("arguments known only at run time")
                }
                None => None,
            };
            if let Some(why) = why {
                let (rel, line) = self.at(file, key);
                self.out.keeps_modes = Some(format!(
                    "{rel}:{line}: {key} may keep the permissions of the files it copies ({why})"
                ));
            }
        }
    }

    /// One controller path a task reads (see [`Discovery::read_module`]).
    fn read_path(&mut self, src: &str, module: &str, task: &Yaml, file: &Path) {
        let dir = file.parent().unwrap_or(self.root).to_path_buf();
        if templated(src) {
            if let Some(names) = loop_names(src, task) {
                for n in names {
                    self.read_path(&n, module, task, file);
                }
                return;
            }
            // The paths a file lookup loop found: they count where the
            // loop is analysed (or the loop makes the whole source count).
            if file_loop_item(src, task) {
                return;
            }
            static ANCHOR: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
                regex::Regex::new(r"^\{\{-?\s*(role_path|playbook_dir)\s*-?\}\}/")
                    .expect("valid regex")
            });
            let (base, rest) = match ANCHOR.captures(src) {
                Some(c) if &c[1] == "role_path" => (
                    Some(vec![dir.parent().unwrap_or(&dir).to_path_buf()]),
                    &src[c[0].len()..],
                ),
                Some(c) => (Some(self.plays()), &src[c[0].len()..]),
                None => (None, src),
            };
            let literal = &rest[..rest
                .find("{{")
                .or_else(|| rest.find("{%"))
                .unwrap_or(rest.len())];
            let literal_dir = literal
                .rsplit_once('/')
                .map(|(d, _)| d)
                .filter(|d| !d.is_empty() && !templated(d));
            let bounded = match (&base, literal_dir) {
                // Inside a role counted whole.
                (Some(_), None) if src.contains("role_path") && !rest.contains("..") => {
                    self.role_of(file).is_some()
                }
                (Some(bs), Some(d)) => {
                    for b in bs {
                        let p = normalize(&b.join(d));
                        self.count_read(&p, module, src, file);
                    }
                    true
                }
                (None, Some(d)) if Path::new(d).is_absolute() => {
                    self.count_read(Path::new(d), module, src, file);
                    true
                }
                (None, Some(d)) => {
                    for b in self.bases(&dir) {
                        let p = normalize(&b.join(d));
                        self.count_read(&p, module, src, file);
                    }
                    true
                }
                _ => false,
            };
            if !bounded {
                // Relative to the playbook directory, a run-time name may
                // lead into any role too (`roles/x/files/y`).
                let (rel, line) = self.at(file, src);
                self.give_up(format!(
                    "{rel}:{line}: {module} reads '{src}', a path known only at run time"
                ));
            }
            return;
        }
        if Path::new(src).is_absolute() {
            self.count_read(Path::new(src), module, src, file);
            return;
        }
        // Below a missing directory of the workspace nothing is found (see
        // `resolve_candidate`).
        let descends = !src.split('/').any(|c| c == "..");
        let bases = self.bases_memoised(&dir);
        let cands: Vec<PathBuf> = bases
            .iter()
            .filter(|b| !(descends && under(b, self.root)) || self.is_dir_memoised(b))
            .map(|b| normalize(&b.join(src)))
            .collect();
        // Every existing candidate counts (which one Ansible reads first
        // depends on the task's search path); one outside the workspace is
        // an error even when another lies inside.
        for p in &cands {
            if under(p, self.root) {
                if self.obs.exists(p) {
                    self.reference(p, file, src);
                }
            } else {
                self.count_read(p, module, src, file);
            }
        }
    }

    /// A path the play reads (absolute and normalised): counted inside the
    /// workspace, an error outside it (unless in `allow_outside`, where it
    /// must be reached through a link in the workspace to count).
    fn count_read(&mut self, p: &Path, module: &str, src: &str, file: &Path) {
        if under(p, self.root) {
            if self.obs.exists(p) {
                self.reference(p, file, src);
            }
            return;
        }
        // A relative name that leads out only where nothing exists is not
        // read there (Ansible tries the other bases); an absolute one is
        // rejected whether or not this machine has it.
        if self.error.is_some() || (!Path::new(src).is_absolute() && !self.obs.exists(p)) {
            return;
        }
        let loc = self.location(file, src);
        let how = if Path::new(src).is_absolute() {
            "an absolute path on the machine running the build"
        } else {
            "a path that leads out of the workspace"
        };
        let allowed = self.allow_outside.iter().any(|a| p.starts_with(a));
        let hint = if allowed {
            "the directory is in allow_outside, but only links inside the workspace are followed into it: link the file into the workspace (e.g. the role's files/) and name the link relatively".to_string()
        } else {
            "Ansible reads it on the machine running the build, so a fresh clone or another runner would build something else; copy the file into the workspace (the role's files/ or templates/) and name it relatively".to_string()
        };
        self.error = Some(
            Error::input_at(
                loc,
                format!("{module} reads '{src}', {how} ({})", p.display()),
            )
            .with_hint(hint),
        );
    }

    /// The role directory `file` belongs to, if any.
    fn role_of(&self, file: &Path) -> Option<String> {
        let rel = self.rel(file);
        self.out
            .roles
            .values()
            .find(|r| rel.starts_with(&format!("{r}/")))
            .cloned()
    }

    /// Where Ansible may find the task file `t` included from a file in
    /// `dir`: beside that file, and, walking up the include chain, in the
    /// role's `tasks/` and the role itself, the playbook's directory and its
    /// `tasks/`, the directory ansible-playbook runs in (`dwim` on the
    /// include's name; the first that exists is loaded, before the one
    /// beside the including file for some chains). Each that exists is
    /// scanned (over-approximate: which one is loaded depends on the chain).
    fn task_file_candidates(&self, dir: &Path, t: &str) -> Vec<PathBuf> {
        let mut out = vec![dir.join(t)];
        if Path::new(t).is_absolute() {
            return out;
        }
        let mut bases: Vec<PathBuf> = vec![];
        if let Some(role) = self.role_of(&dir.join("_")) {
            let role = self.root.join(role);
            bases.extend([role.join("tasks"), role.join("handlers"), role]);
        }
        let cwd = self.root.join(&self.source);
        for p in self.plays().into_iter().chain([cwd.clone()]) {
            // The including file's directory relative to the playbook's,
            // taken from the run directory too.
            if let Ok(rest) = dir.strip_prefix(&p) {
                bases.push(cwd.join(rest));
            }
            bases.extend([p.join("tasks"), p]);
        }
        for b in bases {
            let c = normalized(b.join(t));
            if strictly_below(&c, self.root) && !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    fn scan_playbook(&mut self, path: &Path) -> Result<()> {
        let Some(docs) = self.load(path)? else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(self.root).to_path_buf();
        self.play_dirs.insert(dir.clone());
        let rel = self.rel(path);
        for doc in &docs {
            let Some(plays) = doc.as_vec() else { continue };
            for play in plays {
                for key in PLAYBOOK_KEYS {
                    if let Some(target) = include_target(&play[*key], play) {
                        let target = target.as_str();
                        if templated(target) {
                            self.give_up(format!(
                                "{rel} imports a playbook with a templated name '{target}'"
                            ));
                        } else {
                            self.queue.push_back(Work::Playbook(dir.join(target)));
                        }
                    }
                }
                let on_controller = play["connection"].as_str() == Some("local")
                    || match &play["hosts"] {
                        Yaml::String(h) => h
                            .split([',', ':'])
                            .any(|h| CONTROLLER_HOSTS.contains(&h.trim())),
                        Yaml::Array(a) => a
                            .iter()
                            .filter_map(Yaml::as_str)
                            .any(|h| CONTROLLER_HOSTS.contains(&h.trim())),
                        _ => false,
                    };
                if on_controller {
                    let (rel, line) = self.at(path, "hosts");
                    self.whole_source(format!(
                        "{rel}:{line}: a play runs on the machine running the build, where it may read any file"
                    ));
                }
                if let Some(roles) = play["roles"].as_vec() {
                    for r in roles {
                        self.role_ref(r, path);
                    }
                }
                match &play["vars_files"] {
                    Yaml::Array(files) => {
                        for f in files {
                            self.vars_file(f, &dir, &rel);
                        }
                    }
                    // A string is a one-item list.
                    f @ Yaml::String(_) => self.vars_file(f, &dir, &rel),
                    _ => {}
                }
                for list in PLAY_TASK_LISTS {
                    self.scan_tasks(&play[*list], path);
                }
            }
        }
        Ok(())
    }

    fn vars_file(&mut self, f: &Yaml, dir: &Path, from: &str) {
        let names: Vec<&str> = match f {
            Yaml::String(s) => vec![s.as_str()],
            // A list means "the first of these that exists".
            Yaml::Array(a) => a.iter().filter_map(Yaml::as_str).collect(),
            _ => vec![],
        };
        for name in names {
            if templated(name) {
                // A literal directory before the template counts whole
                // (see `candidates`); without one, any file may be read.
                let prefix = &name[..name.find("{{").or_else(|| name.find("{%")).unwrap_or(0)];
                if prefix.rsplit_once('/').is_none_or(|(d, _)| d.is_empty()) {
                    let file = self.root.join(from);
                    let (rel, line) = self.at(&file, name);
                    self.give_up(format!(
                        "{rel}:{line}: reads vars file '{name}', a name known only at run time"
                    ));
                }
                continue;
            }
            let p = normalize(&dir.join(name));
            let file = self.root.join(from);
            self.vars_candidate(&p, name, &file);
        }
    }

    /// A vars file the play may load: read (whole) inside the workspace,
    /// an error naming the line outside it (absolute, or climbing out with
    /// `..` to a file that exists).
    fn vars_candidate(&mut self, p: &Path, name: &str, file: &Path) {
        if !p.starts_with(self.root) {
            self.count_read(p, "the play", name, file);
            return;
        }
        if self.obs.is_file(p) {
            let rel = self.rel(p);
            self.note_outside(&rel);
            self.out.read.insert(rel);
        }
    }

    /// `include_vars: NAME` is found the way Ansible's `_find_needle('vars',
    /// NAME)` looks: in the role's `vars/` and directory, the task file's
    /// directory's `vars/` and itself, then each play's directory's `vars/`
    /// and itself. Every existing candidate counts.
    fn include_vars_search(&mut self, name: &str, file: &Path) {
        let name = name.trim();
        if name.is_empty() || templated(name) || Path::new(name).is_absolute() {
            // Templated names and absolute paths: see `vars_file`.
            return;
        }
        let dir = file.parent().unwrap_or(self.root).to_path_buf();
        let mut dirs: Vec<PathBuf> = vec![];
        if let Some(role) = self.role_of(file) {
            dirs.push(self.root.join(role));
        }
        dirs.push(dir);
        dirs.extend(self.plays());
        // `vars/NAME` from the directory ansible-playbook runs in.
        dirs.push(self.root.join(&self.source));
        let first = name.split('/').next().unwrap_or("");
        for d in dirs {
            let mut cands = vec![d.join(name)];
            if first != "vars" {
                cands.insert(0, d.join("vars").join(name));
            }
            for c in cands {
                self.vars_candidate(&normalize(&c), name, file);
            }
        }
    }

    fn role_ref(&mut self, r: &Yaml, from: &Path) {
        // `roles: [{role: x, delegate_to: localhost}]`: its tasks run on
        // the controller.
        if r["delegate_to"].as_str().is_some_and(controller_host)
            || r["connection"].as_str() == Some("local")
        {
            let (rel, line) = self.at(from, "delegate_to");
            self.whole_source(format!(
                "{rel}:{line}: a role runs on the machine running the play, where it may read any file"
            ));
        }
        let name = match r {
            Yaml::String(s) => Some(s.clone()),
            Yaml::Hash(_) => r["role"]
                .as_str()
                .or_else(|| r["name"].as_str())
                .map(str::to_string),
            _ => None,
        };
        match name {
            Some(n) if templated(&n) => {
                let rel = self.rel(from);
                self.give_up(format!("{rel} uses a role whose name is templated: '{n}'"));
            }
            Some(n) => self
                .pending_roles
                .push_back((n, from.to_path_buf(), self.cur_play.clone())),
            None => {}
        }
    }

    fn scan_tasks(&mut self, tasks: &Yaml, file: &Path) {
        let Some(list) = tasks.as_vec() else { return };
        let dir = file.parent().unwrap_or(self.root).to_path_buf();
        for task in list {
            if task.as_hash().is_none() {
                continue;
            }
            let rewritten = action_task(task);
            let task = rewritten.as_ref().unwrap_or(task);
            for key in ROLE_KEYS {
                let Some(h) = task.as_hash() else { continue };
                if !h.contains_key(&Yaml::String((*key).to_string())) {
                    continue;
                }
                let v = &task[*key];
                let named = match v {
                    // Free form: `include_role: name=x` or `include_role: x`.
                    Yaml::String(s) => {
                        let (args, rest) = free_form(s);
                        args.get("name")
                            .or_else(|| args.get("role"))
                            .cloned()
                            .or_else(|| (!rest.is_empty()).then_some(rest))
                            .map(Yaml::String)
                    }
                    Yaml::Hash(_) => [&v["name"], &v["role"]]
                        .into_iter()
                        .find(|x| x.as_str().is_some())
                        .cloned(),
                    _ => None,
                }
                .or_else(|| {
                    [&task["args"]["name"], &task["args"]["role"]]
                        .into_iter()
                        .find(|x| x.as_str().is_some())
                        .cloned()
                });
                match named {
                    Some(n) => self.role_ref(&n, file),
                    None => {
                        let rel = self.rel(file);
                        self.give_up(format!(
                            "{rel} has a {key} task whose role the analysis cannot read"
                        ));
                    }
                }
            }
            for key in TASK_FILE_KEYS {
                let v = &task[*key];
                if let Some(t) = include_target(v, task) {
                    let t = t.as_str();
                    if templated(t) {
                        let rel = self.rel(file);
                        self.give_up(format!(
                            "{rel} includes a task file with a templated name '{t}'"
                        ));
                    } else {
                        for p in self.task_file_candidates(&dir, t) {
                            self.queue.push_back(Work::Tasks(p, self.cur_play.clone()));
                        }
                    }
                }
            }
            for key in VARS_FILE_KEYS {
                let v = &task[*key];
                if let Some(t) = include_target(v, task) {
                    let t = t.as_str();
                    let rel = self.rel(file);
                    self.vars_file(&Yaml::String(t.to_string()), &dir, &rel);
                    self.include_vars_search(t, file);
                }
            }
            self.read_module(task, file);
            // A block's delegate_to and connection hold for its tasks.
            let outer = self.local;
            self.local = outer
                || task["delegate_to"].as_str().is_some_and(controller_host)
                || task["connection"].as_str() == Some("local");
            for key in BLOCK_KEYS {
                self.scan_tasks(&task[*key], file);
            }
            self.local = outer;
        }
    }

    fn resolve_role(&mut self, name: &str, from: &Path) -> Result<()> {
        // Ansible's order (names with a `/` too): roles/ beside the
        // playbook, the roles path, beside the role naming it (a
        // `meta/main.yml` dependency: after the roles path, so a role of the
        // same name there is the one loaded), the playbook's directory, then
        // the name as a path from the directory ansible-playbook runs in.
        let mut candidates: Vec<PathBuf> = vec![self.cur_play.join("roles").join(name)];
        candidates.extend(self.roles_path.iter().map(|r| self.root.join(r).join(name)));
        if from
            .file_name()
            .is_some_and(|f| f == "main.yml" || f == "main.yaml")
            && from
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|m| m == "meta")
            && let Some(owner) = from.parent().and_then(Path::parent)
            && let Some(beside) = owner.parent()
        {
            candidates.push(beside.join(name));
        }
        candidates.push(self.cur_play.join(name));
        candidates.push(self.root.join(&self.source).join(name));
        let Some(dir) = candidates
            .iter()
            .map(|c| normalize(c))
            .find(|c| self.obs.is_dir(c))
        else {
            let rel_from = self.rel(from);
            let text = self.obs.read_to_string(from).unwrap_or_default();
            let line = text
                .lines()
                .position(|l| l.contains(name))
                .map_or(1, |i| i + 1);
            // Each place once (the playbook's directory is often the
            // source, searched twice under two names).
            let mut searched: Vec<String> = vec![];
            for c in &candidates {
                let rel = self.rel(&normalize(c));
                if !searched.contains(&rel) {
                    searched.push(rel);
                }
            }
            return Err(Error::input_at(
                Location::at_line(&rel_from, &text, line),
                format!("role '{name}' not found"),
            )
            .with_hint(format!(
                "searched {}; add the role there or set roles_path for the layer",
                searched.join(", ")
            )));
        };
        let rel_dir = self.rel(&dir);
        if self.out.roles.values().any(|r| *r == rel_dir) {
            return Ok(());
        }
        // The same name may be another role for a play of another directory.
        let key = if self.out.roles.contains_key(name) {
            rel_dir.clone()
        } else {
            name.to_string()
        };
        self.out.roles.insert(key, rel_dir);

        for meta in ["meta/main.yml", "meta/main.yaml"] {
            let p = dir.join(meta);
            if let Some(docs) = self.load(&p)? {
                for doc in &docs {
                    if let Some(deps) = doc["dependencies"].as_vec() {
                        for d in deps {
                            self.role_ref(d, &p);
                        }
                    }
                }
            }
        }
        for sub in ["tasks", "handlers"] {
            let d = dir.join(sub);
            if !self.obs.is_dir(&d) {
                continue;
            }
            let files: Vec<PathBuf> = self
                .obs
                .files_below(&d)
                .into_iter()
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
                .collect();
            for f in files {
                self.queue.push_back(Work::Tasks(f, self.cur_play.clone()));
            }
        }
        Ok(())
    }
}

/// A YAML file's text and documents (see [`LoadedYaml`]).
fn load_yaml(obs: &Observer, path: &Path) -> LoadedYaml {
    let bytes = obs.read(path).map_err(|e| e.to_string())?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        // Bad input, not a broken machine: Ansible rejects it too.
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let before = String::from_utf8_lossy(&bytes[..at]);
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count());
            let text = String::from_utf8_lossy(&bytes).into_owned();
            return Ok((
                text,
                Err(format!(
                    "{line}\0{col}\0not valid UTF-8 (at byte {at} of the file)"
                )),
            ));
        }
    };
    let docs = super::yaml::load(&text)
        .map_err(|e| format!("{}\0{}\0{}", e.marker().line(), e.marker().col(), e.info()));
    Ok((text, docs))
}

/// Paths a string may name: itself, the values of `k=v` arguments, string
/// literals inside Jinja, and the literal directory before a template
/// expression (`../clusters/{{ name }}.yml` names `../clusters`). The flag
/// says whether a directory is acceptable.
fn candidates(s: &str, key: Option<&str>) -> Vec<(String, bool)> {
    static QUOTED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"'([^']*)'|"([^"]*)""#).expect("valid regex")
    });
    let mut out = vec![];
    if templated(s) {
        let prefix = &s[..s.find("{{").or_else(|| s.find("{%")).unwrap_or(0)];
        if let Some((d, _)) = prefix.rsplit_once('/')
            && !d.is_empty()
        {
            out.push((d.to_string(), true));
        }
        for c in QUOTED.captures_iter(s) {
            let lit = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
            if lit.contains('/') || lit.contains('.') {
                out.push((lit.to_string(), key == Some("dir")));
            }
        }
        return out;
    }
    out.push((s.to_string(), key == Some("dir")));
    if s.contains('=') && s.contains(' ') {
        for w in s.split_whitespace() {
            if let Some((k, v)) = w.split_once('=') {
                out.push((
                    v.trim_matches(|c| c == '"' || c == '\'').to_string(),
                    k == "dir",
                ));
            }
        }
    }
    out
}

/// The names `{{ item }}` (or `{{ item.KEY }}`, with a literal prefix and
/// suffix) takes in a task looping over a list of literals; `None` when the
/// analysis cannot list them.
fn loop_names(src: &str, task: &Yaml) -> Option<Vec<String>> {
    static ITEM: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"^([^{}]*)\{\{-?\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[['"]([^'"]+)['"]\])?\s*-?\}\}([^{}]*)$"#)
            .expect("valid regex")
    });
    let c = ITEM.captures(src)?;
    let loop_var = task["loop_control"]["loop_var"].as_str().unwrap_or("item");
    if &c[2] != loop_var {
        return None;
    }
    let field = c.get(3).or_else(|| c.get(4)).map(|m| m.as_str());
    let items = ["loop", "with_items", "with_list"]
        .iter()
        .find_map(|k| task[*k].as_vec())?;
    let mut out = vec![];
    for it in items {
        let v = match (field, it) {
            (None, Yaml::String(s)) => s.clone(),
            (Some(f), Yaml::Hash(_)) => it[f].as_str()?.to_string(),
            _ => return None,
        };
        if templated(&v) {
            return None;
        }
        out.push(format!("{}{v}{}", &c[1], &c[5]));
    }
    Some(out)
}

/// Whether `src` is exactly the loop variable of a loop whose items are
/// paths found by a file lookup: `with_fileglob`, `with_first_found`, or
/// `loop:` over a `fileglob` / `first_found` query with nothing else in
/// the expression. What those lookups read is counted where the loop is
/// analysed (its names, or the whole source when they are not literal).
fn file_loop_item(src: &str, task: &Yaml) -> bool {
    static ITEM: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"^\{\{-?\s*([A-Za-z_][A-Za-z0-9_]*)(\.src|\[['"]src['"]\])?\s*-?\}\}$"#)
            .expect("valid regex")
    });
    static QUERY: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#"^\{\{-?\s*(?:query|q|lookup)\(\s*['"](?:ansible\.builtin\.|ansible\.legacy\.)?(?:fileglob|first_found)['"][^(){}]*\)\s*(?:\|\s*(?:sort|list|unique)\s*)*-?\}\}$"#,
        )
        .expect("valid regex")
    });
    let Some(c) = ITEM.captures(src.trim()) else {
        return false;
    };
    let loop_var = task["loop_control"]["loop_var"].as_str().unwrap_or("item");
    if &c[1] != loop_var {
        return false;
    }
    let loops: Vec<&str> = task
        .as_hash()
        .into_iter()
        .flat_map(|h| h.keys())
        .filter_map(|k| k.as_str()?.strip_prefix("with_"))
        .map(super::reads::lookup_name)
        .collect();
    if c.get(2).is_some() {
        // `item.src` of a filetree loop: a file below the directories it walks.
        return loops.contains(&"filetree");
    }
    if loops
        .iter()
        .any(|l| matches!(*l, "fileglob" | "first_found"))
    {
        return true;
    }
    ["loop", "with_items", "with_list"]
        .iter()
        .any(|k| task[*k].as_str().is_some_and(|s| QUERY.is_match(s.trim())))
}

/// Lexically removes `.` and `..` so the same file is seen once.
fn normalize(p: &Path) -> PathBuf {
    if is_normal(p) {
        return p.to_path_buf();
    }
    normalize_components(p)
}

/// [`normalize`] of a path the caller owns: not copied when normal.
fn normalized(p: PathBuf) -> PathBuf {
    if is_normal(&p) {
        return p;
    }
    normalize_components(&p)
}

/// Is `p` already what [`normalize`] makes of it? Most paths are: no `.`
/// or `..` component, no `//`, no trailing `/` (asked for every name tried
/// on the search path).
fn is_normal(p: &Path) -> bool {
    let b = p.as_os_str().as_encoded_bytes();
    if b.is_empty() || b.last() == Some(&b'/') {
        return false;
    }
    b.split(|&c| c == b'/').enumerate().all(|(i, c)| {
        if c.is_empty() {
            i == 0
        } else {
            c != b"." && c != b".."
        }
    })
}

/// Is the normal path `p` strictly below the normal directory `root`?
/// (`Path::starts_with` compared byte-wise: both are normal.)
fn strictly_below(p: &Path, root: &Path) -> bool {
    below_bytes(p, root).is_some_and(|rest| !rest.is_empty())
}

/// `p.starts_with(root)` for a normal `p`, byte-wise when `root` is normal.
fn under(p: &Path, root: &Path) -> bool {
    below_bytes(p, root).is_some()
}

/// The bytes of the normal path `p` after `root` and its `/` (empty for
/// `root` itself), if `p` is `root` or below it; compared component-wise
/// when `root` is not normal.
fn below_bytes<'a>(p: &'a Path, root: &Path) -> Option<&'a [u8]> {
    let pb = p.as_os_str().as_encoded_bytes();
    if !is_normal(root) {
        let rest = p.strip_prefix(root).ok()?;
        return Some(&pb[pb.len() - rest.as_os_str().len()..]);
    }
    let r = root.as_os_str().as_encoded_bytes();
    let r = r.strip_suffix(b"/").unwrap_or(r);
    let rest = pb.strip_prefix(r)?;
    match rest {
        [] => Some(rest),
        [b'/', tail @ ..] => Some(tail),
        _ if r.is_empty() => Some(rest),
        _ => None,
    }
}

/// [`normalize`] component by component.
fn normalize_components(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every role directory directly under the given roles paths.
pub fn all_roles(obs: &Observer, root: &Path, roles_path: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for rp in roles_path {
        let dir = root.join(rp);
        let Ok(entries) = obs.read_dir(&dir) else {
            continue;
        };
        let names: Vec<String> = entries
            .iter()
            .filter(|n| obs.is_dir(&dir.join(n)))
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        for n in names {
            out.entry(n.clone()).or_insert_with(|| format!("{rp}/{n}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path of `normalize` gives what the component walk gives.
    #[test]
    fn normalize_fast_path_agrees() {
        for p in [
            "/a/b",
            "a/b",
            "/a/.hidden/b",
            "/a/b.",
            "/a/..b/c",
            "/",
            "/a/",
            "//a",
            "a//b",
            "./a",
            "../a",
            "/a/./b",
            "/a/../b",
            "/a/.",
            "/a/..",
            ".",
            "..",
            "a",
            "/a/b/..c",
        ] {
            assert_eq!(
                normalize(Path::new(p)),
                normalize_components(Path::new(p)),
                "{p}"
            );
        }
    }

    #[test]
    fn byte_wise_prefixes_agree_with_components() {
        let paths = ["/w", "/w/a", "/w/a/b", "/wx", "/wx/a", "/", "/v/w", "/w/.a"];
        for root in ["/w", "/w/", "/", "/w/./", "/x/../w"] {
            for p in paths {
                let (p, r) = (Path::new(p), Path::new(root));
                assert_eq!(under(p, r), p.starts_with(r), "{p:?} under {r:?}");
                assert_eq!(
                    strictly_below(p, r),
                    p.starts_with(r) && p.components().ne(r.components()),
                    "{p:?} strictly below {r:?}"
                );
            }
        }
    }
}
