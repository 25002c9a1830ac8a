//! How ansible-playbook is run for a layer, shared by the build (against the
//! working container) and `lint` (`--syntax-check`, and `ansible-lint`), so
//! both see the same inventory, vars, roles path and settings.
//!
//! I/O: writes the generated inventory and vars into a work directory;
//! [`syntax_check`], [`ansible_lint`] and [`vault_values`] run the tools
//! through [`super::cli`].

use std::path::Path;
use std::process::{Command, Stdio};

use super::{PlayRequest, cli};

/// The generated inventory: the layer's host, reached at `ansible_host`
/// (the mounted root for chroot, the container for buildah) through the
/// layer's connection, in the layer's groups (`ungrouped` when it has none).
pub fn inventory_ini(play: &PlayRequest, ansible_host: &str) -> String {
    inventory_with(play, ansible_host, play.connection.plugin())
}

fn inventory_with(play: &PlayRequest, ansible_host: &str, plugin: &str) -> String {
    let mut ini = String::new();
    let host = format!(
        "{} ansible_host={} ansible_connection={plugin}\n",
        play.host_name, ansible_host,
    );
    if play.groups.is_empty() {
        ini.push_str("[ungrouped]\n");
        ini.push_str(&host);
    }
    for g in &play.groups {
        ini.push_str(&format!("[{g}]\n{host}\n"));
    }
    ini
}

/// Writes the generated inventory and the system's vars into `work_dir`
/// and completes `cmd` (an ansible-playbook command) as a build runs it:
/// [`write_play_files`], then [`playbook_args`] and [`env_vars`].
pub fn playbook_command(
    cmd: &mut Command,
    play: &PlayRequest,
    work_dir: &Path,
    ansible_host: &str,
    options: &[&str],
) -> Result<(), String> {
    write_play_files(play, work_dir, ansible_host)?;
    cmd.args(playbook_args(play, work_dir, options));
    ansible_env(cmd, play, work_dir);
    Ok(())
}

/// Writes the generated inventory (the host at `ansible_host`) and the
/// system's vars into `work_dir`, where [`playbook_args`] names them.
/// Returns notes for the build log (how the play reaches the root).
pub fn write_play_files(
    play: &PlayRequest,
    work_dir: &Path,
    ansible_host: &str,
) -> Result<Vec<String>, String> {
    let mut notes = vec![];
    let mut plugin = play.connection.plugin();
    if play.connection == super::Connection::Mitogen {
        write_mitogen_plugins(work_dir)?;
        // Mitogen's interpreter is the root's Python: without one (a
        // busybox root, a play that installs Python with raw), the plain
        // chroot connection serves the play.
        if !root_has_python(Path::new(ansible_host)) {
            plugin = super::Connection::Chroot.plugin();
            notes.push(format!(
                "# layerbuild: the image has no Python ({}): the play runs over {plugin}",
                ROOT_PYTHONS.join(", ")
            ));
        }
    }
    let empty = work_dir.join(EMPTY_CFG);
    std::fs::write(&empty, "").map_err(|e| format!("cannot write {}: {e}", empty.display()))?;
    let inventory = work_dir.join("inventory.ini");
    std::fs::write(&inventory, inventory_with(play, ansible_host, plugin))
        .map_err(|e| format!("cannot write {}: {e}", inventory.display()))?;
    let vars = work_dir.join(crate::ops::gc::VARS_FILE);
    // It may hold secret_vars values: readable by the builder only, from
    // its creation on (removed after the play, or by the next command
    // after a crash: `gc::remove_leftover_vars`).
    let written = {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o.open(&vars).and_then(|mut f| {
            f.write_all(
                serde_json::Value::Object(play.vars.clone())
                    .to_string()
                    .as_bytes(),
            )
        })
    };
    written.map_err(|e| format!("cannot write {}: {e}", vars.display()))?;
    // The task events callback, and its (empty) events file.
    let plugins = work_dir.join(CALLBACK_DIR);
    // The events may quote secret values: readable by the builder only.
    let events = || {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o.open(work_dir.join(EVENTS_FILE)).map(drop)
    };
    std::fs::create_dir_all(&plugins)
        .and_then(|()| std::fs::write(plugins.join("layerbuild_events.py"), EVENTS_CALLBACK))
        .and_then(|()| events())
        .map_err(|e| {
            format!(
                "cannot write the events callback in {}: {e}",
                plugins.display()
            )
        })?;
    Ok(notes)
}

/// The callback plugin that writes task events (see the file).
const EVENTS_CALLBACK: &str = include_str!("layerbuild_events.py");

/// The `mitogen` connection's plugin (see the file).
const MITOGEN_CONNECTION: &str = include_str!("ansible_plugins/mitogen_chroot.py");
/// Its modules, in a directory of their own (Ansible takes every file of a
/// plugin directory for a plugin).
const MITOGEN_MODULES: &[(&str, &str)] = &[
    (
        "layerbuild_mitogen_check.py",
        include_str!("ansible_plugins/layerbuild_mitogen_check.py"),
    ),
    (
        "layerbuild_mitogen_chroot.py",
        include_str!("ansible_plugins/layerbuild_mitogen_chroot.py"),
    ),
];
const MITOGEN_MODULES_DIR: &str = "layerbuild_mitogen";
/// Ansible's strategies with Mitogen's mixin, under their own names.
const MITOGEN_STRATEGY: &str = include_str!("ansible_plugins/strategy.py");
const MITOGEN_STRATEGIES: &[&str] = &["linear", "free", "host_pinned"];
const CONNECTION_DIR: &str = "connection_plugins";
const STRATEGY_DIR: &str = "strategy_plugins";

/// Where Mitogen is looked for: `$LAYERBUILD_MITOGEN`, else where
/// `scripts/install-deps.sh` puts it (a `pip install --target` directory
/// holding `ansible_mitogen/`).
pub fn mitogen_dir() -> std::path::PathBuf {
    std::env::var_os("LAYERBUILD_MITOGEN")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/local/lib/layerbuild/mitogen".into())
}

fn write_mitogen_plugins(work_dir: &Path) -> Result<(), String> {
    let write = |dir: &Path, name: &str, text: &str| {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(dir.join(name), text))
            .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
    };
    write(
        &work_dir.join(CONNECTION_DIR),
        "mitogen_chroot.py",
        MITOGEN_CONNECTION,
    )?;
    let modules = work_dir.join(MITOGEN_MODULES_DIR);
    for (name, text) in MITOGEN_MODULES {
        write(&modules, name, text)?;
    }
    let strat = work_dir.join(STRATEGY_DIR);
    for s in MITOGEN_STRATEGIES {
        write(
            &strat,
            &format!("{s}.py"),
            &MITOGEN_STRATEGY.replace("STRATEGY", s),
        )?;
    }
    Ok(())
}

/// The interpreters the `mitogen` connection looks for in the root (as
/// `layerbuild_mitogen_chroot.py` does).
const ROOT_PYTHONS: &[&str] = &[
    "/usr/bin/python3",
    "/usr/libexec/platform-python",
    "/usr/bin/python3.12",
    "/usr/bin/python3.11",
    "/usr/bin/python3.10",
    "/usr/bin/python3.9",
    "/usr/bin/python3.8",
    "/usr/bin/python3.7",
    "/usr/bin/python3.6",
];

/// Whether the root at `root` has one of [`ROOT_PYTHONS`], symbolic links
/// resolved inside the root.
fn root_has_python(root: &Path) -> bool {
    ROOT_PYTHONS
        .iter()
        .any(|p| in_root(root, p, 0).is_some_and(|h| h.is_file()))
}

/// `path` of the root as the host sees it, links followed inside the root.
fn in_root(root: &Path, path: &str, depth: usize) -> Option<std::path::PathBuf> {
    let mut cur = std::path::PathBuf::from("/");
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let next = cur.join(part);
        let host = root.join(next.strip_prefix("/").ok()?);
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            if depth > 40 {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            let t = match target.is_absolute() {
                true => target,
                false => cur.join(target),
            };
            let rest = parts[i + 1..].join("/");
            let joined = format!("{}/{rest}", t.display());
            return in_root(root, &normalize(&joined), depth + 1);
        }
        cur = next;
    }
    Some(root.join(cur.strip_prefix("/").ok()?))
}

/// `a/./b/../c` as `a/c` (lexically, never above `/`).
fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = vec![];
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/"))
}
/// Where [`write_play_files`] puts it, in the work directory.
const CALLBACK_DIR: &str = "callback_plugins";
/// The events file it appends to, in the work directory: one JSON line per
/// task start and result ([`super::TaskEvent`]).
pub const EVENTS_FILE: &str = "ansible-events.jsonl";

/// The configuration a play reads when its source has no `ansible.cfg`
/// Ansible reads (none, or a world-writable directory's): an empty one in
/// the work directory, so that Ansible does not read the builder's
/// `~/.ansible.cfg` or `/etc/ansible/ansible.cfg` instead, which are no
/// inputs (as `ANSIBLE_CONFIG` of the environment is not).
const EMPTY_CFG: &str = "empty-ansible.cfg";

/// Whether Ansible reads the source's `ansible.cfg`: there is one, and
/// the directory is not world-writable (then Ansible ignores it).
fn source_cfg_read(play: &PlayRequest) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let world_writable =
        std::fs::metadata(&play.source_dir).is_ok_and(|m| m.permissions().mode() & 0o002 != 0);
    !world_writable && play.source_dir.join("ansible.cfg").is_file()
}

/// `ANSIBLE_CALLBACK_PLUGINS`: the events callback's directory, then the
/// directories the source's `ansible.cfg` names (`[defaults]
/// callback_plugins`, relative to the source), else Ansible's defaults,
/// so a site's own callbacks still load.
fn callback_plugins(play: &PlayRequest, work_dir: &Path) -> String {
    let ours = work_dir.join(CALLBACK_DIR).display().to_string();
    // Ansible ignores the ansible.cfg of a world-writable directory.
    let world_writable = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&play.source_dir).is_ok_and(|m| m.permissions().mode() & 0o002 != 0)
    };
    let cfg = match world_writable {
        true => String::new(),
        false => std::fs::read_to_string(play.source_dir.join("ansible.cfg")).unwrap_or_default(),
    };
    // Ansible expands `~` in these paths itself.
    let theirs = ini_value(&cfg, "defaults", "callback_plugins").map(|v| {
        v.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| match d.starts_with('~') {
                true => d.to_string(),
                false => play.source_dir.join(d).display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(":")
    });
    let theirs = theirs.unwrap_or_else(|| {
        "~/.ansible/plugins/callback:/usr/share/ansible/plugins/callback".into()
    });
    format!("{ours}:{theirs}")
}

/// `key`'s value in `[section]` of an INI text (Ansible's configparser
/// reading: `key = value` or `key: value`, `#`/`;` comments).
fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = name.trim() == section;
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = line.split_once(['=', ':'])
            && k.trim() == key
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// ansible-playbook's arguments as a build runs it: `OPTIONS -i
/// SYSTEM_INVENTORY -i GENERATED -e @vars.json PLAYBOOK` (the files
/// [`write_play_files`] writes).
pub fn playbook_args(play: &PlayRequest, work_dir: &Path, options: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    if let Some(inv) = &play.inventory {
        args.extend(["-i".into(), inv.to_string_lossy().into_owned()]);
    }
    let inventory = work_dir.join("inventory.ini");
    args.extend(["-i".into(), inventory.to_string_lossy().into_owned()]);
    let vars = work_dir.join(crate::ops::gc::VARS_FILE);
    args.extend(["-e".into(), format!("@{}", vars.display())]);
    args.push(play.playbook.clone());
    args
}

/// The environment every Ansible tool runs with (it runs from
/// `play.source_dir`).
pub fn env_vars(play: &PlayRequest, work_dir: &Path) -> Vec<(&'static str, String)> {
    let roles: Vec<String> = play
        .roles_path
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut vars = vec![
        ("ANSIBLE_ROLES_PATH", roles.join(":")),
        ("ANSIBLE_NOCOLOR", "1".into()),
        ("ANSIBLE_FORCE_COLOR", "0".into()),
        ("ANSIBLE_RETRY_FILES_ENABLED", "0".into()),
        ("ANSIBLE_HOST_KEY_CHECKING", "0".into()),
        // Task headers never show module arguments (which may hold secrets).
        ("ANSIBLE_DISPLAY_ARGS_TO_STDOUT", "0".into()),
        ("ANSIBLE_PYTHON_INTERPRETER", "auto_silent".into()),
        (
            "ANSIBLE_LOCAL_TEMP",
            work_dir.join("ansible-tmp").to_string_lossy().into_owned(),
        ),
        ("PYTHONUNBUFFERED", "1".into()),
        // Modules imported in the root leave no __pycache__ there, whatever
        // the caller's environment says: the image does not depend on it.
        ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ("ANSIBLE_CALLBACK_PLUGINS", callback_plugins(play, work_dir)),
        (
            "LAYERBUILD_EVENTS",
            work_dir.join(EVENTS_FILE).to_string_lossy().into_owned(),
        ),
    ];
    if !source_cfg_read(play) {
        vars.push((
            "ANSIBLE_CONFIG",
            work_dir.join(EMPTY_CFG).to_string_lossy().into_owned(),
        ));
    }
    if play.connection == super::Connection::Mitogen {
        let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
        vars.extend([
            (
                "ANSIBLE_STRATEGY_PLUGINS",
                format!(
                    "{}:{}",
                    path(work_dir.join(STRATEGY_DIR)),
                    path(play.mitogen.join("ansible_mitogen/plugins/strategy"))
                ),
            ),
            ("ANSIBLE_STRATEGY", "linear".into()),
            (
                "ANSIBLE_CONNECTION_PLUGINS",
                path(work_dir.join(CONNECTION_DIR)),
            ),
            // Mitogen's temporary files on the private /dev tmpfs, never
            // in the image.
            ("ANSIBLE_REMOTE_TMP", "/dev/shm".into()),
            (
                "LAYERBUILD_MITOGEN",
                play.mitogen.to_string_lossy().into_owned(),
            ),
        ]);
    }
    vars
}

/// The `ANSIBLE_*` variables of the user's environment that reach Ansible:
/// they change how a play runs or what it shows (vault credentials,
/// display, logs, timeouts, pipelining), or name host tools that are not
/// inputs anyway (installed collections, see the README's known limits),
/// not what a play makes.
const PASSED_THROUGH: &[&str] = &[
    "ANSIBLE_COLLECTIONS_PATH",
    "ANSIBLE_COLLECTIONS_PATHS",
    "ANSIBLE_DEBUG",
    "ANSIBLE_DEPRECATION_WARNINGS",
    "ANSIBLE_FORCE_COLOR",
    "ANSIBLE_FORKS",
    "ANSIBLE_LOCALHOST_WARNING",
    "ANSIBLE_LOG_PATH",
    "ANSIBLE_NOCOLOR",
    "ANSIBLE_PIPELINING",
    "ANSIBLE_SYSTEM_WARNINGS",
    "ANSIBLE_TIMEOUT",
    "ANSIBLE_VAULT_IDENTITY",
    "ANSIBLE_VAULT_IDENTITY_LIST",
    "ANSIBLE_VAULT_PASSWORD_FILE",
    "ANSIBLE_VERBOSITY",
];

/// Of `names` (a process's environment), the `ANSIBLE_*` variables that
/// are not passed to Ansible: any other one may change what a play makes
/// (`ANSIBLE_CONFIG` replaces the source's `ansible.cfg`,
/// `ANSIBLE_HASH_BEHAVIOUR` merges variables...) without changing a digest,
/// so the tools run without them. Sorted.
pub fn left_out<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with("ANSIBLE_") && !PASSED_THROUGH.contains(n))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// [`left_out`] of this process's environment.
pub fn left_out_of_env() -> Vec<String> {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    left_out(names.iter().map(String::as_str))
}

/// What a build says of [`left_out_of_env`], when it is not empty.
pub fn left_out_warning(names: &[String]) -> Option<String> {
    (!names.is_empty()).then(|| {
        format!(
            "not passed to ansible-playbook: {} (set in the environment, it would change what a play makes without changing a digest; set it in the source's ansible.cfg, which counts)",
            names.join(", ")
        )
    })
}

/// The working directory and environment every Ansible tool runs with.
fn ansible_env(cmd: &mut Command, play: &PlayRequest, work_dir: &Path) {
    for name in left_out_of_env() {
        cmd.env_remove(name);
    }
    cmd.current_dir(&play.source_dir)
        .stdin(Stdio::null())
        .envs(env_vars(play, work_dir));
}

/// What a checking tool said.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub success: bool,
    /// Exit code, when the tool exited (not killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

fn run(mut cmd: Command, program: &str) -> Result<ToolOutput, String> {
    let out = cli::output(&mut cmd).map_err(|e| format!("cannot run {program}: {e}"))?;
    Ok(ToolOutput {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `ansible-playbook --syntax-check` with the inventory, vars and settings a
/// build would use; nothing connects to the host, so no container is needed.
/// `work_dir` must exist.
pub fn syntax_check(
    program: &str,
    play: &PlayRequest,
    work_dir: &Path,
) -> Result<ToolOutput, String> {
    let mut cmd = cli::command(program, None);
    playbook_command(
        &mut cmd,
        play,
        work_dir,
        &play.host_name,
        &["--syntax-check"],
    )?;
    run(cmd, program)
}

/// Whether `program` can be run at all (`--version`).
pub fn available(program: &str) -> bool {
    cli::available(program)
}

/// `ansible-lint` on the layer's playbook in pep8-style parseable output
/// (`path:line[:column]: rule: message`), from the source directory with
/// the layer's roles path. Findings make it exit non-zero; that is not a
/// failure to run.
pub fn ansible_lint(
    program: &str,
    play: &PlayRequest,
    work_dir: &Path,
) -> Result<ToolOutput, String> {
    let mut cmd = cli::command(program, None);
    cmd.args(["-p", "--nocolor", "--offline", "--project-dir"])
        .arg(&play.source_dir)
        .arg(&play.playbook);
    ansible_env(&mut cmd, play, work_dir);
    run(cmd, program)
}

/// Reads every `files` entry as Ansible does (with the vault secrets its
/// configuration names: `ANSIBLE_VAULT_PASSWORD_FILE`, `ansible.cfg` in the
/// source directory, vault identities) and prints what it decrypts, as a
/// JSON list: every value and line of a wholly encrypted file, every
/// `!vault` value of the others.
const VAULT_VALUES: &str = r#"
import json, sys
from ansible import constants as C
from ansible.cli import CLI
from ansible.parsing.dataloader import DataLoader
from ansible.parsing.yaml.objects import AnsibleVaultEncryptedUnicode
loader = DataLoader()
loader.set_vault_secrets(CLI.setup_vault_secrets(
    loader, vault_ids=list(C.DEFAULT_VAULT_IDENTITY_LIST), auto_prompt=False))
out = []
def walk(v, whole):
    if isinstance(v, AnsibleVaultEncryptedUnicode):
        out.append(str(v))
    elif isinstance(v, dict):
        for k, x in v.items():
            walk(x, whole)
    elif isinstance(v, (list, tuple)):
        for x in v:
            walk(x, whole)
    elif whole and v is not None:
        out.append(str(v))
failed = 0
for path in sys.argv[1:]:
    try:
        with open(path, 'rb') as f:
            whole = f.read().lstrip().startswith(b'$ANSIBLE_VAULT;')
        if whole:
            text, _ = loader._get_file_contents(path)
            out.extend(text.decode('utf-8', 'replace').splitlines())
        walk(loader.load_from_file(path, cache=False), whole)
    except Exception as e:
        failed += 1
        print('%s: %s' % (path, type(e).__name__), file=sys.stderr)
print(json.dumps(out))
sys.exit(1 if failed else 0)
"#;

/// What Ansible will decrypt from the vault data in `play.vault_files`,
/// to redact from its output, and why some could not be read (Ansible
/// then fails on that file too, without printing its values).
pub fn vault_values(
    ansible_playbook: &str,
    play: &PlayRequest,
    work_dir: &Path,
) -> (Vec<String>, Option<String>) {
    if play.vault_files.is_empty() {
        return (vec![], None);
    }
    // The interpreter ansible-playbook runs with holds Ansible's modules.
    let python = interpreter_of(ansible_playbook).unwrap_or_else(|| "python3".into());
    let mut cmd = cli::command(&python, None);
    cmd.arg("-c").arg(VAULT_VALUES).args(&play.vault_files);
    ansible_env(&mut cmd, play, work_dir);
    let out = match cli::output(&mut cmd) {
        Ok(out) => out,
        Err(e) => return (vec![], Some(format!("cannot run {python}: {e}"))),
    };
    let values: Vec<String> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let why = (!out.status.success()).then(|| {
        let err = String::from_utf8_lossy(&out.stderr);
        format!(
            "could not open vault data to redact it: {}",
            err.lines().last().unwrap_or("no output")
        )
    });
    (values, why)
}

/// The interpreter in the `#!` line of `program` (looked up on `PATH`).
fn interpreter_of(program: &str) -> Option<String> {
    let path = if program.contains('/') {
        std::path::PathBuf::from(program)
    } else {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| Path::new(d).join(program))
            .find(|p| p.is_file())?
    };
    let mut head = [0u8; 256];
    let n = {
        use std::io::Read;
        std::fs::File::open(&path).ok()?.read(&mut head).ok()?
    };
    let line = std::str::from_utf8(&head[..n]).ok()?.lines().next()?;
    let cmd = line.strip_prefix("#!")?.trim();
    let mut words = cmd.split_whitespace();
    let first = words.next()?;
    // `#!/usr/bin/env python3`
    if first.ends_with("/env") {
        return words.next().map(str::to_string);
    }
    Some(first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_run_settings_of_the_environment_reach_ansible() {
        let env = [
            "HOME",
            "ANSIBLE_CONFIG",
            "ANSIBLE_HASH_BEHAVIOUR",
            "ANSIBLE_VAULT_PASSWORD_FILE",
            "ANSIBLE_PIPELINING",
            "ANSIBLE_CONFIG",
            "ANSIBLE_ROLES_PATH",
        ];
        assert_eq!(
            left_out(env),
            [
                "ANSIBLE_CONFIG",
                "ANSIBLE_HASH_BEHAVIOUR",
                "ANSIBLE_ROLES_PATH"
            ]
        );
        assert_eq!(left_out_warning(&[]), None);
        let w = left_out_warning(&["ANSIBLE_CONFIG".into()]).unwrap();
        assert!(
            w.contains("ANSIBLE_CONFIG") && w.contains("ansible.cfg"),
            "{w}"
        );
    }

    /// The mitogen connection's plugins and settings are a digest input
    /// through `fingerprint::MITOGEN_RUNNER`: this fails until it is
    /// raised with any change to them.
    #[test]
    fn the_mitogen_runner_version_follows_its_plugins() {
        let mut h = blake3::Hasher::new();
        h.update(MITOGEN_CONNECTION.as_bytes());
        for (name, text) in MITOGEN_MODULES {
            h.update(name.as_bytes());
            h.update(text.as_bytes());
        }
        h.update(MITOGEN_STRATEGY.as_bytes());
        h.update(MITOGEN_STRATEGIES.join(",").as_bytes());
        h.update(ROOT_PYTHONS.join(",").as_bytes());
        let play = PlayRequest {
            source_dir: "/src".into(),
            playbook: "site.yml".into(),
            host_name: "h".into(),
            groups: vec![],
            inventory: None,
            vars: Default::default(),
            roles_path: vec![],
            connection: super::super::Connection::Mitogen,
            vault_files: vec![],
            mitogen: "/mitogen".into(),
        };
        h.update(format!("{:?}", env_vars(&play, Path::new("/work"))).as_bytes());
        let hash = h.finalize().to_hex().to_string();
        assert_eq!(
            (crate::fingerprint::MITOGEN_RUNNER, &hash[..16]),
            (3, "20433746ef11c76b"),
            "the mitogen connection changed: raise fingerprint::MITOGEN_RUNNER and record the new hash here"
        );
    }

    #[test]
    fn the_events_callback_comes_first_and_the_sources_callbacks_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let play = |source: &Path| PlayRequest {
            source_dir: source.to_path_buf(),
            playbook: "site.yml".into(),
            host_name: "h".into(),
            groups: vec![],
            inventory: None,
            vars: Default::default(),
            roles_path: vec![],
            connection: super::super::Connection::Chroot,
            vault_files: vec![],
            mitogen: "/mitogen".into(),
        };
        let work = Path::new("/work");
        assert_eq!(
            callback_plugins(&play(dir.path()), work),
            "/work/callback_plugins:~/.ansible/plugins/callback:/usr/share/ansible/plugins/callback"
        );
        std::fs::write(
            dir.path().join("ansible.cfg"),
            "[ssh_connection]\ncallback_plugins = /no\n[defaults]\n# callback_plugins = /not\ncallback_plugins = plugins/cb:~/cb\n",
        )
        .unwrap();
        assert_eq!(
            callback_plugins(&play(dir.path()), work),
            format!(
                "/work/callback_plugins:{}/plugins/cb:~/cb",
                dir.path().display()
            )
        );
    }

    #[test]
    fn a_failed_tasks_message_is_its_msg_or_its_output() {
        let ev = |json: &str| serde_json::from_str::<super::super::TaskEvent>(json).unwrap();
        let raw = ev(
            r#"{"event":"result","status":"failed","ignored":null,"name":"x","msg":"non-zero return code","stderr":"no key\n","rc":4}"#,
        );
        assert!(raw.is_failure());
        assert_eq!(raw.message(), "no key (rc 4)");
        let module = ev(
            r#"{"event":"result","status":"failed","ignored":false,"name":"x","msg":"Destination /etc/x does not exist"}"#,
        );
        assert_eq!(module.message(), "Destination /etc/x does not exist");
        let ignored = ev(r#"{"event":"result","status":"failed","ignored":true,"name":"x"}"#);
        assert!(!ignored.is_failure());
        let role = ev(r#"{"event":"task","name":"write","role":"slurm"}"#);
        assert_eq!(role.title(), "slurm : write");
        let named = ev(r#"{"event":"task","name":"slurm : write","role":"slurm"}"#);
        assert_eq!(named.title(), "slurm : write");
    }
}
