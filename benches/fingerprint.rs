//! Benchmark: fingerprinting and no-op builds of a large generated workspace.
//!
//! Generates 500 layers (a busybox `//base/os` and 25 image types, each a
//! chain of layers below it) whose 499 playbooks use one role each of 101
//! files: 50,399 role files, 50,902 files in all. Then measures:
//!   1. fingerprinting all layers in-process (library call, no stat cache),
//!      against plain hashing of the same files (the cost of the Ansible and
//!      variable analysis);
//!   2. the first fingerprint after a fresh clone (binary `ls`, no cache
//!      database: every file is read) against `find ... -exec cat {} +` of
//!      the same files, in the same run;
//!   3. `ls` served by the fingerprint memo (stat calls only, no file
//!      read: asserted with `LAYERBUILD_STATS=1`), and `ls` with the memo
//!      off (`LAYERBUILD_MEMO=0`: the stat cache spares the hashing, the
//!      play analysis still reads playbooks and templates);
//!   4. the first, cold `build //...` with real buildah and ansible-playbook;
//!   5. a no-op `build //...` (every layer cached, served by the memo, no
//!      file read) of the real binary, its parts (`LAYERBUILD_STATS=1`
//!      phase times) and its peak memory.
//!
//! Run with `scripts/bench` (or `cargo bench --bench fingerprint`).
//! `LAYERBUILD_BENCH_SKIP_BUILD=1` skips 4 and 5; `LAYERBUILD_BENCH_DIR=DIR`
//! keeps the generated workspace in `DIR/ws`.
//! Prints a Markdown table of the figures at the end.

mod common;
use common::bin;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TYPES: usize = 25;
const LAYERS: usize = 500;
/// Files of each role: a task file, a template, defaults and plain files.
const FILES_PER_ROLE: usize = 101;

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

fn generate(root: &Path, name: &str) -> usize {
    let mut lf = format!(
        "[workspace]\nname = \"{name}\"\n\n[build]\nisolation = \"chroot\"\n\n\
         [systems.bench]\ninventory = \"inventory/bench\"\nvars = {{ cluster_name = \"bench\" }}\n\n\
         [layers.\"base/os\"]\nparent = \"scratch\"\nsetup = [\"sh scripts/busybox-root.sh {{root}}\"]\n\n"
    );
    write(
        &root.join("scripts/busybox-root.sh"),
        "set -eu\nroot=\"$1\"\nmkdir -p \"$root/bin\" \"$root/etc\" \"$root/tmp\"\ncp \"$(command -v busybox)\" \"$root/bin/busybox\"\n\
         for a in $(\"$root/bin/busybox\" --list); do [ \"$a\" = busybox ] || ln -sf busybox \"$root/bin/$a\"; done\n",
    );
    write(&root.join("inventory/bench/hosts"), "[Compute]\n");
    write(
        &root.join("inventory/bench/group_vars/all.yml"),
        "ntp_servers: [ntp1, ntp2]\n",
    );
    let mut files = 3; // the inventory and the setup script
    let filler: String = (0..16)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog\n"))
        .collect();
    let mut made = 1;
    let per_type = (LAYERS - 1).div_ceil(TYPES);
    'outer: for t in 0..TYPES {
        for l in 0..per_type {
            if made == LAYERS {
                break 'outer;
            }
            made += 1;
            let label = format!("t{t:02}/l{l:02}");
            let parent = if l == 0 {
                "//base/os".to_string()
            } else {
                format!("//t{t:02}/l{:02}", l - 1)
            };
            let src = format!("src/t{t:02}-l{l:02}");
            let role = format!("r{t:02}_{l:02}");
            lf.push_str(&format!(
                "[layers.\"{label}\"]\nparent = \"{parent}\"\nsource = \"{src}\"\nplaybook = \"play.yml\"\ngroups = [\"Compute\"]\n\n"
            ));
            write(
                &root.join(&src).join("play.yml"),
                &format!("- hosts: Compute\n  gather_facts: false\n  roles:\n    - {role}\n"),
            );
            let rdir = root.join(&src).join("roles").join(&role);
            write(
                &rdir.join("tasks/main.yml"),
                "- name: \"configure {{ cluster_name }}\"\n  ansible.builtin.debug:\n    msg: \"{{ site_name | default('x') }}\"\n  when: enable_debug | default(false)\n\
                 - name: conf\n  ansible.builtin.debug:\n    msg: \"{{ lookup('template', 'conf.j2') }}\"\n  loop: \"{{ ntp_servers }}\"\n",
            );
            write(
                &rdir.join("templates/conf.j2"),
                "{% for s in ntp_servers %}server {{ s }} iburst\n{% endfor %}\nport {{ role_port }}\n",
            );
            write(
                &rdir.join("defaults/main.yml"),
                "role_port: \"{{ base_port | default(100) }}\"\n",
            );
            for f in 3..FILES_PER_ROLE {
                write(
                    &rdir.join(format!("files/f{f:03}.conf")),
                    &format!("# {label} file {f}\n{filler}"),
                );
            }
            files += 1 + FILES_PER_ROLE;
        }
    }
    write(&root.join("Layerfile.toml"), &lf);
    files
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn lb(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("-C")
        .arg(root)
        .args(args)
        .env("LAYERBUILD_STATS", "1");
    c
}

/// What one run's `LAYERBUILD_STATS=1` lines said.
struct Stats {
    /// Files read and hashed.
    hashed: usize,
    /// Files read by the play analysis.
    analysed: usize,
    /// `layerbuild time:` lines, as printed.
    phases: Vec<String>,
}

/// Runs the binary (with `env`); returns the time and its stats.
fn run_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> (Duration, Stats) {
    let mut c = lb(root, args);
    c.envs(env.iter().copied());
    let (out, d) = time(|| c.output().unwrap());
    assert!(
        out.status.success(),
        "layerbuild {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (d, stats_of(&String::from_utf8_lossy(&out.stderr)))
}

/// Runs the binary; returns the time and the number of files whose
/// content it read (hashed, or read by the analysis).
fn run(root: &Path, args: &[&str]) -> (Duration, usize) {
    let (d, s) = run_env(root, args, &[]);
    (d, s.hashed + s.analysed)
}

/// From the `LAYERBUILD_STATS=1` lines: "H files read and hashed, R from
/// the stat cache, A read by the analysis", and the phase times.
fn stats_of(stderr: &str) -> Stats {
    let nums: Vec<usize> = stderr
        .lines()
        .find_map(|l| l.strip_prefix("layerbuild stats: "))
        .unwrap_or_else(|| panic!("no stats line in:\n{stderr}"))
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    Stats {
        hashed: nums[0],
        analysed: nums[2],
        phases: stderr
            .lines()
            .filter_map(|l| l.strip_prefix("layerbuild time: "))
            .map(str::to_string)
            .collect(),
    }
}

/// Runs `args` `n` times; the times, asserting every run read `reads` files (if given).
fn runs(root: &Path, args: &[&str], n: usize, reads: Option<usize>) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let (d, r) = run(root, args);
            if let Some(want) = reads {
                assert_eq!(r, want, "layerbuild {args:?} read {r} files");
            }
            d
        })
        .collect()
}

/// Peak RSS (MiB) of one run of the binary, from GNU time.
fn peak_rss_of(root: &Path, args: &[&str]) -> f64 {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(bin())
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .expect("GNU time (apt-get install time)");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .last()
        .and_then(|l| l.trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn stats(v: &[Duration]) -> String {
    format!(
        "median {}, min {}",
        ms(median(v.to_vec())),
        ms(*v.iter().min().unwrap())
    )
}

struct Table(Vec<[String; 3]>);

impl Table {
    fn row(&mut self, what: impl Into<String>, figure: impl Into<String>, goal: &str) {
        let r = [what.into(), figure.into(), goal.to_string()];
        println!("{} : {}", r[0], r[1]);
        self.0.push(r);
    }

    fn print(&self) {
        println!("\n| measurement | figure | goal |\n|---|---|---|");
        for [a, b, c] in &self.0 {
            println!("| {a} | {b} | {c} |");
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    // LAYERBUILD_BENCH_DIR=DIR keeps the generated workspace in DIR/ws (for profiling).
    let dir = tempfile::tempdir().unwrap();
    let root = match std::env::var_os("LAYERBUILD_BENCH_DIR") {
        Some(d) => Path::new(&d).join("ws"),
        None => dir.path().join("ws"),
    };
    let _ = std::fs::remove_dir_all(&root);
    let name = format!("bench{}", std::process::id());
    let (files, generated) = time(|| generate(&root, &name));
    println!("workspace: {LAYERS} layers, {files} files (generated in {generated:.2?})");
    let mut t = Table(vec![]);

    let ws = layerbuild::workspace::Workspace::load(&root).unwrap();
    let graph = layerbuild::graph::LayerGraph::new(&ws).unwrap();
    let labels = graph.select(&[layerbuild::label::Pattern::All]).unwrap();
    let system = ws.system(None).unwrap();
    let mut full = vec![];
    for _ in 0..5 {
        let (prints, d) =
            time(|| layerbuild::fingerprint::fingerprint(&ws, system, &labels).unwrap());
        assert_eq!(prints.len(), LAYERS);
        full.push(d);
    }
    t.row(
        format!("fingerprint {LAYERS} layers / {files} files in-process, every file read (with Ansible role discovery and variable analysis)"),
        format!("{} (peak RSS {:.0} MiB)", stats(&full), peak_rss_mib()),
        "",
    );

    // Plain file hashing of the same trees, for the cost of the variable analysis.
    let roots: std::collections::BTreeSet<String> = ws
        .layers
        .values()
        .filter_map(|l| l.source.clone())
        .chain(std::iter::once("inventory/bench".to_string()))
        .collect();
    let mut plain = vec![];
    for _ in 0..5 {
        let (idx, d) = time(|| {
            layerbuild::fingerprint::files::FileIndex::build(
                &root,
                &roots,
                &Default::default(),
                &ws.cache_dir,
                None,
            )
            .unwrap()
        });
        assert!(idx.len() >= files - 3);
        plain.push(d);
    }
    t.row(
        "plain blake3 hashing of the same files, in-process (the floor of a cold fingerprint)",
        stats(&plain),
        "",
    );

    // A fresh clone: no cache directory, every file is read; against cat.
    // (`ls` keeps the stat cache and the memo warm: each run starts
    // without them.)
    let fresh: Vec<Duration> = (0..6)
        .map(|_| {
            let _ = std::fs::remove_dir_all(&ws.cache_dir);
            let (d, s) = run_env(&root, &["ls"], &[]);
            assert_eq!(s.hashed, files, "a fresh clone hashes every file");
            d
        })
        .skip(1)
        .collect();
    let mut cat = vec![];
    for _ in 0..5 {
        let (st, d) = time(|| {
            Command::new("sh")
                .arg("-c")
                .arg("find Layerfile.toml scripts inventory src -type f -exec cat {} + > /dev/null")
                .current_dir(&root)
                .status()
                .unwrap()
        });
        assert!(st.success());
        cat.push(d);
    }
    let (f, c) = (median(fresh.clone()), median(cat.clone()));
    t.row(
        "first fingerprint after a fresh clone: `ls` (binary; load, analyse, read and hash every file)",
        stats(&fresh),
        "",
    );
    t.row(
        "`find ... -exec cat {} + > /dev/null` of the same files (same run)",
        stats(&cat),
        "",
    );
    t.row(
        "fresh-clone fingerprint / cat",
        format!(
            "{:.2}x (medians), {:.2}x (mins)",
            f.as_secs_f64() / c.as_secs_f64(),
            fresh.iter().min().unwrap().as_secs_f64() / cat.iter().min().unwrap().as_secs_f64()
        ),
        "<= 1.2x",
    );

    // The stat cache: a database where the entries are stored; files must be
    // older than the racy margin for their entries to be trusted.
    let _ = std::fs::remove_dir_all(&ws.cache_dir);
    std::fs::create_dir_all(&ws.cache_dir).unwrap();
    std::fs::write(ws.db_path(), "").unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let (_, r) = run(&root, &["ls"]);
    assert!(
        r >= files,
        "the first scan with a database reads everything"
    );
    let warm = runs(&root, &["ls"], 7, Some(0));
    t.row(
        "`ls`, served by the memo (stat calls only; files read: 0)",
        stats(&warm),
        "",
    );
    let mut no_memo = vec![];
    let mut analysed = 0;
    for _ in 0..5 {
        let (d, s) = run_env(&root, &["ls"], &[("LAYERBUILD_MEMO", "0")]);
        assert_eq!(s.hashed, 0, "the stat cache spares every hash");
        analysed = s.analysed;
        no_memo.push(d);
    }
    t.row(
        format!("`ls`, memo off, warm stat cache (files hashed: 0; read by the play analysis: {analysed})"),
        stats(&no_memo),
        "",
    );
    // What a no-op build is made of, in-process.
    use layerbuild::fingerprint::session::StatStore;
    let db = layerbuild::cache::fingerprint_db::FingerprintDb::open(&ws.cache_dir).unwrap();
    let (entries, load) = time(|| db.load_stats());
    let n_entries = entries.len();
    let mut stat = layerbuild::fingerprint::statcache::StatCache::new(entries);
    let (_, fp_warm) = time(|| {
        layerbuild::fingerprint::fingerprint_with(&ws, system, &labels, Some(&mut stat)).unwrap()
    });
    assert_eq!(stat.hashed, 0);
    let (_, loadws) = time(|| {
        let ws = layerbuild::workspace::Workspace::load(&root).unwrap();
        layerbuild::graph::LayerGraph::new(&ws).unwrap()
    });
    let (_, images) = time(|| {
        Command::new("buildah")
            .args(["images", "--format", "{{.ID}}"])
            .output()
    });
    t.row(
        "  memo off, in-process: load the Layerfile / load the stat cache / fingerprint with it / `buildah images`",
        format!(
            "{} / {} ({n_entries} entries) / {} / {}",
            ms(loadws),
            ms(load),
            ms(fp_warm),
            ms(images)
        ),
        "",
    );
    drop(db);

    if std::env::var_os("LAYERBUILD_BENCH_SKIP_BUILD").is_some() {
        t.print();
        return;
    }
    let buildah_ok = Command::new("buildah")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        buildah_ok,
        "the build benchmarks need buildah and ansible (see README); set LAYERBUILD_BENCH_SKIP_BUILD=1 to skip them"
    );

    let (cold, _) = run(&root, &["build", "//..."]);
    t.row(
        format!(
            "first build //... (cold, real buildah + ansible-playbook, -j {})",
            ws.build.jobs
        ),
        format!(
            "{:.1?} ({:.2} s per layer)",
            cold,
            cold.as_secs_f64() / LAYERS as f64
        ),
        "",
    );
    let noop = runs(&root, &["build", "//..."], 7, Some(0));
    t.row(
        format!(
            "no-op build //... (binary, all {LAYERS} cached, served by the memo, files read: 0)"
        ),
        stats(&noop),
        "<= 200 ms",
    );
    let (_, parts) = run_env(&root, &["build", "//..."], &[]);
    t.row(
        "  its parts (`LAYERBUILD_STATS=1`; `buildah images` runs meanwhile)",
        parts.phases.join("; "),
        "",
    );
    let no_memo: Vec<Duration> = (0..3)
        .map(|_| run_env(&root, &["build", "//..."], &[("LAYERBUILD_MEMO", "0")]).0)
        .collect();
    t.row(
        "no-op build //... with the memo off (warm stat cache)",
        stats(&no_memo),
        "",
    );
    t.row(
        "peak memory (RSS) of the no-op build",
        format!("{:.0} MiB", peak_rss_of(&root, &["build", "//..."])),
        "",
    );

    // Remove the bench's images.
    let out = Command::new("buildah")
        .args(["images", "--format", "{{.Name}}:{{.Tag}}"])
        .output()
        .unwrap();
    let prefix = format!("localhost/layerbuild/{name}/");
    for img in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&prefix))
    {
        let _ = Command::new("buildah").args(["rmi", "-f", img]).output();
    }
    t.print();
}
