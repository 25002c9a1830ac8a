//! Benchmark: what layerbuild adds to the buildah and ansible-playbook
//! commands it runs, and how well it overlaps independent branches.
//!
//! 1. Overhead: a 1-layer and a 5-layer chain of busybox layers (each with a
//!    playbook of one `raw` task) are built by `layerbuild build //...`, and
//!    by a shell script replaying the very commands layerbuild's build log
//!    shows (`$ ...` lines, with their directory and environment), so the
//!    baseline follows whatever the executor runs (another Ansible
//!    connection, other buildah flags). The script is made from a first,
//!    untimed build whose ansible-playbook is wrapped only to keep a copy of
//!    the two small files layerbuild generates for it (inventory, vars);
//!    the script writes them before timing starts. Timed runs alternate.
//! 2. Parallelism: two independent 3-layer branches built with `-j 2`,
//!    against each branch built alone.
//!
//! Needs root, buildah, ansible-core and busybox-static. Run with
//! `scripts/bench` (or `cargo bench --bench overhead`).

mod common;
use common::bin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 7;

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

/// A workspace of `branches` independent chains of `depth` layers each:
/// `//bN/l0` from scratch (busybox), then layers running a `raw` task.
fn generate(root: &Path, name: &str, branches: usize, depth: usize) -> Vec<String> {
    let mut lf = format!(
        "[workspace]\nname = \"{name}\"\n\n[build]\nisolation = \"chroot\"\njobs = 2\n\n\
         [systems.bench]\ninventory = \"inventory/bench\"\nvars = {{ cluster_name = \"bench\" }}\n\n"
    );
    write(
        &root.join("scripts/busybox-root.sh"),
        "set -eu\nroot=\"$1\"\nmkdir -p \"$root/bin\" \"$root/etc\" \"$root/tmp\"\ncp \"$(command -v busybox)\" \"$root/bin/busybox\"\n\
         for a in $(\"$root/bin/busybox\" --list); do [ \"$a\" = busybox ] || ln -sf busybox \"$root/bin/$a\"; done\n",
    );
    write(&root.join("inventory/bench/hosts"), "[Compute]\n");
    let mut labels = vec![];
    for b in 0..branches {
        for l in 0..depth {
            let label = format!("b{b}/l{l}");
            let src = format!("src/b{b}-l{l}");
            let parent = if l == 0 {
                "scratch".to_string()
            } else {
                format!("//b{b}/l{}", l - 1)
            };
            lf.push_str(&format!(
                "[layers.\"{label}\"]\nparent = \"{parent}\"\nsource = \"{src}\"\nplaybook = \"play.yml\"\ngroups = [\"Compute\"]\n"
            ));
            if l == 0 {
                lf.push_str("setup = [\"sh scripts/busybox-root.sh {root}\"]\n");
            }
            lf.push('\n');
            write(
                &root.join(&src).join("play.yml"),
                &format!(
                    "- hosts: Compute\n  gather_facts: false\n  tasks:\n    - name: mark\n      raw: echo {label} {{{{ cluster_name }}}} > /etc/layer-b{b}-l{l}\n"
                ),
            );
            labels.push(format!("//{label}"));
        }
    }
    write(&root.join("Layerfile.toml"), &lf);
    labels
}

fn build(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Duration {
    let t = Instant::now();
    let out = Command::new(bin())
        .arg("-C")
        .arg(root)
        .arg("build")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "layerbuild build {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Double-quoted for sh, with the captured mount point turned into `${root}`.
fn dq(s: &str, mount: Option<&str>) -> String {
    let mut e = String::from("\"");
    for c in s.chars() {
        if matches!(c, '"' | '$' | '`' | '\\') {
            e.push('\\');
        }
        e.push(c);
    }
    e.push('"');
    match mount {
        Some(m) if !m.is_empty() => e.replace(m, "${root}"),
        _ => e,
    }
}

/// The `$ ` lines of a build log as shell lines, with `from_ws` renamed to `to_ws`.
fn replay_lines(log: &str, wrapper: &str, from_ws: &str, to_ws: &str) -> Vec<String> {
    let rename = |s: &str| {
        s.replace(
            &format!("layerbuild-{from_ws}-"),
            &format!("layerbuild-{to_ws}-"),
        )
        .replace(
            &format!("layerbuild/{from_ws}/"),
            &format!("layerbuild/{to_ws}/"),
        )
        .replace(wrapper, "ansible-playbook")
    };
    // The mount point, as the setup commands' environment or the chroot
    // connection's `unshare ... sh ROOT ansible-playbook` shows it.
    let words: Vec<Vec<String>> = log
        .lines()
        .filter_map(|l| l.strip_prefix("$ "))
        .map(|l| shell_words::split(l).unwrap_or_default())
        .collect();
    let mount = words
        .iter()
        .flatten()
        .find_map(|w| w.strip_prefix("LAYERBUILD_ROOT=").map(str::to_string))
        .or_else(|| {
            words.iter().find_map(|ws| {
                let i = ws.iter().position(|w| w == "unshare")?;
                ws[i..]
                    .iter()
                    .find(|w| w.starts_with('/') && w.ends_with("/merged"))
                    .cloned()
            })
        });
    let mut out = vec![];
    for line in log.lines().filter_map(|l| l.strip_prefix("$ ")) {
        let words: Vec<String> = shell_words::split(line)
            .expect("a log line is shell words")
            .iter()
            .map(|w| rename(w))
            .collect();
        let mut sh = String::new();
        let mut rest = &words[..];
        if rest.first().is_some_and(|w| w == "cd") {
            sh.push_str(&format!("cd {} && ", dq(&rest[1], None)));
            rest = &rest[3..];
        }
        while let Some((k, v)) = rest.first().and_then(|w| w.split_once('='))
            && !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            sh.push_str(&format!("{k}={} ", dq(v, mount.as_deref())));
            rest = &rest[1..];
        }
        let argv: Vec<String> = rest.iter().map(|w| dq(w, mount.as_deref())).collect();
        // The chroot connection reaches the container at its mount point,
        // written in the generated inventory: this replay's mount point.
        if let Some(m) = &mount
            && rest.iter().any(|w| w == "ansible-playbook")
        {
            for inv in rest
                .windows(2)
                .filter(|p| p[0] == "-i" && p[1].ends_with("inventory.ini"))
            {
                sh.insert_str(
                    0,
                    &format!("sed -i \"s#{m}#$root#g\" {} && ", dq(&inv[1], None)),
                );
            }
        }
        sh.push_str(&argv.join(" "));
        if rest.get(1).is_some_and(|w| w == "mount") {
            out.push(format!("root=$({sh}) || exit 1"));
        } else {
            out.push(format!("( {sh} ) || exit 1"));
        }
    }
    out
}

struct Chain {
    dir: tempfile::TempDir,
    labels: Vec<String>,
    /// The replay scripts, ready to run.
    scripts: Vec<PathBuf>,
}

/// Builds a first (untimed) copy of the chain with the ansible-playbook
/// wrapper, and writes `RUNS` replay scripts of its logs (each with its own
/// container and image names).
fn prepare(depth: usize, tag: &str) -> Chain {
    let dir = tempfile::tempdir().unwrap();
    let cap_name = format!("ovh{}{tag}cap", std::process::id());
    let cap = dir.path().join("cap");
    let labels = generate(&cap, &cap_name, 1, depth);
    let saved = dir.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    let wrapper = dir.path().join("ansible-playbook-keep");
    write(
        &wrapper,
        &format!(
            "#!/bin/sh\nprev=\nfor a in \"$@\"; do case \"$a\" in\n  @*/vars.json) d=$(dirname \"${{a#@}}\"); mkdir -p \"{s}/$(basename \"$d\")\"; cp \"${{a#@}}\" \"{s}/$(basename \"$d\")/\";;\n  */inventory.ini) d=$(dirname \"$a\"); mkdir -p \"{s}/$(basename \"$d\")\"; cp \"$a\" \"{s}/$(basename \"$d\")/\";;\nesac; done\nexec ansible-playbook \"$@\"\n",
            s = saved.display()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    build(
        &cap,
        &["//..."],
        &[("LAYERBUILD_ANSIBLE_PLAYBOOK", wrapper.to_str().unwrap())],
    );
    // Logs in build order (a chain: the label order).
    let logs: Vec<String> = labels
        .iter()
        .map(|l| {
            let d = cap.join("cache/logs").join(l.trim_start_matches("//"));
            let f = std::fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|x| x == "log"))
                .unwrap();
            std::fs::read_to_string(f).unwrap()
        })
        .collect();
    let mut scripts = vec![];
    for i in 0..RUNS {
        let name = format!("ovh{}{tag}r{i}", std::process::id());
        let mut s = String::from("#!/bin/sh\n");
        s.push_str(&format!(
            "exec > {} 2>&1\n",
            dir.path().join(format!("replay{i}.log")).display()
        ));
        for log in &logs {
            s.push_str(&replay_lines(log, wrapper.to_str().unwrap(), &cap_name, &name).join("\n"));
            s.push('\n');
        }
        // The generated files, in place before timing (layerbuild writes
        // them during its timed run).
        for e in std::fs::read_dir(&saved).unwrap() {
            let e = e.unwrap();
            let work = cap
                .join("cache/tmp")
                .join(e.file_name().to_string_lossy().replace(&cap_name, &name));
            std::fs::create_dir_all(&work).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap() {
                let f = f.unwrap();
                let text = std::fs::read_to_string(f.path()).unwrap().replace(
                    &format!("layerbuild-{cap_name}-"),
                    &format!("layerbuild-{name}-"),
                );
                std::fs::write(work.join(f.file_name()), text).unwrap();
            }
        }
        let p = dir.path().join(format!("replay{i}.sh"));
        write(&p, &s);
        scripts.push(p);
    }
    Chain {
        dir,
        labels,
        scripts,
    }
}

fn overhead(depth: usize, tag: &str) -> (Duration, Duration) {
    let chain = prepare(depth, tag);
    let (mut ours, mut shell) = (vec![], vec![]);
    for (i, script) in chain.scripts.iter().enumerate() {
        let ws = chain.dir.path().join(format!("lb{i}"));
        let name = format!("ovh{}{tag}lb{i}", std::process::id());
        generate(&ws, &name, 1, depth);
        ours.push(build(&ws, &["//..."], &[]));
        let t = Instant::now();
        let st = Command::new("sh").arg(script).status().unwrap();
        shell.push(t.elapsed());
        assert!(
            st.success(),
            "replay {} failed; see {}",
            script.display(),
            script.with_extension("log").display()
        );
    }
    assert_eq!(chain.labels.len(), depth);
    (median(ours), median(shell))
}

fn remove_images(prefix: &str) {
    let out = Command::new("buildah")
        .args(["images", "--format", "{{.Name}}:{{.Tag}}"])
        .output()
        .unwrap();
    let mut imgs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect();
    // Children first.
    imgs.reverse();
    for img in imgs {
        let _ = Command::new("buildah").args(["rmi", "-f", &img]).output();
    }
}

fn main() {
    common::require_buildah();
    let mut rows: BTreeMap<usize, (String, String, String)> = BTreeMap::new();
    for (i, depth) in [1usize, 5].into_iter().enumerate() {
        let (ours, shell) = overhead(depth, &format!("d{depth}"));
        let per = |d: Duration| format!("{:.2} s/layer", d.as_secs_f64() / depth as f64);
        let row = (
            format!(
                "{depth}-layer chain: layerbuild build //... / the same commands from a shell script (median of {RUNS})"
            ),
            format!(
                "{:.2} s / {:.2} s = {:.3}x ({} vs {}; +{:.0} ms per layer)",
                ours.as_secs_f64(),
                shell.as_secs_f64(),
                ours.as_secs_f64() / shell.as_secs_f64(),
                per(ours),
                per(shell),
                (ours.as_secs_f64() - shell.as_secs_f64()) * 1000.0 / depth as f64
            ),
            "<= 1.05x".to_string(),
        );
        println!("{} : {}", row.0, row.1);
        rows.insert(i, row);
    }

    // Two independent 3-layer branches: three rounds of (each branch alone,
    // both at once), fresh workspaces every time; medians.
    let dir = tempfile::tempdir().unwrap();
    let (mut alone0, mut alone1, mut boths) = (vec![], vec![], vec![]);
    for round in 0..3 {
        for b in 0..2 {
            let ws = dir.path().join(format!("alone{b}r{round}"));
            let name = format!("par{}a{b}r{round}", std::process::id());
            generate(&ws, &name, 2, 3);
            let d = build(&ws, &[&format!("//b{b}/..."), "-j", "2"], &[]);
            if b == 0 {
                alone0.push(d)
            } else {
                alone1.push(d)
            }
        }
        let ws = dir.path().join(format!("bothr{round}"));
        let name = format!("par{}bothr{round}", std::process::id());
        generate(&ws, &name, 2, 3);
        boths.push(build(&ws, &["//...", "-j", "2"], &[]));
    }
    let alone = [median(alone0), median(alone1)];
    let both = median(boths);
    let longer = alone.iter().max().unwrap();
    let row = (
        "two independent 3-layer branches, -j 2: wall / the longer branch alone (medians of 3)"
            .to_string(),
        format!(
            "{:.2} s / {:.2} s = {:.2}x (branches alone: {:.2} s, {:.2} s)",
            both.as_secs_f64(),
            longer.as_secs_f64(),
            both.as_secs_f64() / longer.as_secs_f64(),
            alone[0].as_secs_f64(),
            alone[1].as_secs_f64()
        ),
        "<= 1.1x".to_string(),
    );
    println!("{} : {}", row.0, row.1);
    rows.insert(9, row);

    remove_images(&format!("localhost/layerbuild/ovh{}", std::process::id()));
    remove_images(&format!("localhost/layerbuild/par{}", std::process::id()));
    println!("\n| measurement | figure | goal |\n|---|---|---|");
    for (a, b, c) in rows.values() {
        println!("| {a} | {b} | {c} |");
    }
}
