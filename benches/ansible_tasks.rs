//! Benchmark: what one Ansible task costs in a layer, by task kind and by
//! connection, against plain `ansible-playbook -c community.general.chroot`
//! on the same root.
//!
//! A workspace (kept in `LAYERBUILD_BENCH_DIR`, default
//! `/var/tmp/layerbuild-bench-ansible-tasks`, so its two bases are built
//! once and reused by later runs) holds two bases: busybox (`scratch` with
//! a busybox root) and Debian bookworm with python3 (mmdebstrap), and on
//! top of each, per connection (`chroot`, the default, `mitogen` and
//! `buildah`), a
//! layer per task kind whose play has N tasks of that kind (each doing
//! distinct work: its own path or line) and a layer whose play has none.
//! Kinds: `raw` on both bases; `command`, `copy` (`content:`), `template`
//! (a small template with a variable), `lineinfile` and `file` (`state:
//! directory`) on Debian. Every round rewrites a comment in every play, so
//! every timed `layerbuild build` really runs its play.
//!
//! Per-task cost = (time of the N-task build - time of the 0-task build of
//! the same round, base and connection) / N, median of the rounds. The
//! plain baseline runs the same playbooks with `ansible-playbook -c
//! community.general.chroot` against a fresh working container of the same
//! base image (`buildah from` + `buildah mount`, untimed), with Ansible's
//! defaults. Prints a markdown table: per-task cost by task kind and base,
//! per column, and the 0-task time (start-up) per column.
//!
//! The buildah connection costs seconds per task for some kinds (each
//! module transfer is a `buildah copy`, each command a `buildah run`), so
//! its plays have fewer tasks (10 by default) to keep a run under half an
//! hour; its per-task figure is well above the noise of its start-up.
//!
//!   LAYERBUILD_BENCH_TASKS=N           tasks per play (default 50)
//!   LAYERBUILD_BENCH_BUILDAH_TASKS=M   for the buildah connection (default
//!                                      10, or N when smaller)
//!   LAYERBUILD_BENCH_RUNS=R            rounds (default 3); the table so far
//!                                      is printed (on stderr) after each
//!
//! Needs root, buildah, ansible-core with community.general and
//! containers.podman, busybox-static, mmdebstrap and Mitogen (all from
//! scripts/install-deps.sh). On busybox (no Python) `mitogen` is served by
//! the chroot connection, as builds are. Run with
//! `scripts/bench ansible` (or `cargo bench --bench ansible_tasks`).

mod common;
use common::bin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The workspace's name (its images are `localhost/layerbuild/NAME/...`).
const NAME: &str = "bench-ansible-tasks";
/// (base, task kind), in the table's order.
const ROWS: [(&str, &str); 7] = [
    ("busybox", "raw"),
    ("debian", "raw"),
    ("debian", "command"),
    ("debian", "copy"),
    ("debian", "template"),
    ("debian", "lineinfile"),
    ("debian", "file"),
];
const BASES: [&str; 2] = ["busybox", "debian"];
/// Through layerbuild, with the layer's `ansible_connection`.
const CONNECTIONS: [&str; 3] = ["chroot", "mitogen", "buildah"];
/// The columns: the connections through layerbuild, then plain
/// ansible-playbook.
const PLAIN: &str = "plain";

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

/// Task `i` of a play of `kind` tasks: distinct work for each `i`.
fn task(kind: &str, i: usize) -> String {
    let body = match kind {
        "raw" => format!("      raw: echo {i} > /tmp/bench-raw-{i}\n"),
        "command" => format!("      command: touch /tmp/bench-command-{i}\n"),
        "copy" => format!(
            "      copy:\n        content: \"copy {i}\\n\"\n        dest: /etc/bench-copy-{i}\n"
        ),
        "template" => format!(
            "      template:\n        src: bench.j2\n        dest: /etc/bench-template-{i}\n      vars:\n        n: {i}\n"
        ),
        "lineinfile" => format!(
            "      lineinfile:\n        path: /etc/bench-lines\n        line: \"line {i}\"\n        create: true\n"
        ),
        "file" => {
            format!("      file:\n        path: /opt/bench-dir-{i}\n        state: directory\n")
        }
        _ => unreachable!("{kind}"),
    };
    format!("    - name: {kind} {i}\n{body}")
}

/// A play of `n` tasks of `kind`, marked with `stamp` (a comment that
/// changes the layer's digest, and nothing else).
fn play(kind: &str, n: usize, stamp: &str) -> String {
    let mut p = format!(
        "# round {stamp}\n- hosts: all\n  gather_facts: false\n  vars:\n    greeting: bench\n  tasks:"
    );
    if n == 0 {
        p.push_str(" []\n");
    } else {
        p.push('\n');
        for i in 0..n {
            p.push_str(&task(kind, i));
        }
    }
    p
}

/// The directory of a base's play of `kind` (`empty`: no tasks) for the
/// column `col` (the buildah connection has its own plays: fewer tasks).
fn play_dir(ws: &Path, col: &str, base: &str, kind: &str) -> PathBuf {
    let set = match col {
        "buildah" => "plays-buildah",
        _ => "plays",
    };
    ws.join(set).join(base).join(kind)
}

fn label(base: &str, conn: &str, kind: &str) -> String {
    format!("//{base}-{conn}/{kind}")
}

/// The Layerfile, the busybox script and the template (the plays are
/// written by [`write_plays`]).
fn generate(ws: &Path) {
    write(
        &ws.join("scripts/busybox-root.sh"),
        "set -eu\nroot=\"$1\"\nmkdir -p \"$root/bin\" \"$root/etc\" \"$root/tmp\"\ncp \"$(command -v busybox)\" \"$root/bin/busybox\"\n\
         for a in $(\"$root/bin/busybox\" --list); do [ \"$a\" = busybox ] || ln -sf busybox \"$root/bin/$a\"; done\n",
    );
    let mut lf = format!(
        "[workspace]\nname = \"{NAME}\"\n\n[build]\nisolation = \"chroot\"\njobs = 1\n\n\
         [layers.\"busybox/base\"]\nparent = \"scratch\"\nsetup = [\"sh scripts/busybox-root.sh {{root}}\"]\n\n\
         [layers.\"debian/base\"]\nparent = \"scratch\"\nsetup = [\"mmdebstrap --variant=apt --include=python3 bookworm {{root}}\"]\n\n"
    );
    for base in BASES {
        let kinds = ROWS
            .iter()
            .filter(|(b, _)| *b == base)
            .map(|(_, k)| *k)
            .chain(["empty"]);
        for kind in kinds {
            for conn in CONNECTIONS {
                lf.push_str(&format!(
                    "[layers.\"{}\"]\nparent = \"//{base}/base\"\nsource = \"{}\"\nplaybook = \"tasks.yml\"\nansible_connection = \"{conn}\"\n\n",
                    label(base, conn, kind).trim_start_matches("//"),
                    play_dir(Path::new(""), conn, base, kind).display()
                ));
            }
        }
    }
    write(&ws.join("Layerfile.toml"), &lf);
    for conn in CONNECTIONS {
        write(
            &play_dir(ws, conn, "debian", "template").join("templates/bench.j2"),
            "{{ greeting }} {{ n }}\n",
        );
    }
}

/// Every play, marked with `stamp`: `n(col)` tasks each (none for `empty`).
fn write_plays(ws: &Path, n: &dyn Fn(&str) -> usize, stamp: &str) {
    for conn in CONNECTIONS {
        for (base, kind) in ROWS {
            write(
                &play_dir(ws, conn, base, kind).join("tasks.yml"),
                &play(kind, n(conn), stamp),
            );
        }
        for base in BASES {
            write(
                &play_dir(ws, conn, base, "empty").join("tasks.yml"),
                &play("empty", 0, stamp),
            );
        }
    }
}

fn check(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn layerbuild(ws: &Path, args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("-C")
        .arg(ws)
        .args(args)
        .env("LAYERBUILD_PROGRESS", "plain")
        .output()
        .unwrap();
    check(out, &format!("layerbuild {args:?}"))
}

/// A failed attempt is retried (twice at most): under load, crun 1.8's
/// `buildah run` now and then fails to seal its memfd copy ("Close_Fd
/// sealing memfd copy: Device or resource busy"), which fails a task of the
/// buildah connection. The time is the successful attempt's; the failures
/// are counted in `retries`.
fn build(ws: &Path, label: &str, retries: &mut usize) -> Duration {
    for attempt in 0.. {
        let t = Instant::now();
        let out = Command::new(bin())
            .arg("-C")
            .arg(ws)
            .args(["build", "-j", "1", "--no-outputs", label])
            .env("LAYERBUILD_PROGRESS", "plain")
            .output()
            .unwrap();
        let d = t.elapsed();
        if out.status.success() {
            return d;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if attempt == 2 {
            check(out, &format!("layerbuild build {label}"));
        }
        *retries += 1;
        let why = err
            .lines()
            .find(|l| l.contains("Close_Fd") || l.contains("failed:"))
            .unwrap_or("");
        eprintln!(
            "{label} failed, again: {}",
            why.chars().take(200).collect::<String>()
        );
    }
    unreachable!()
}

fn buildah(args: &[&str]) -> String {
    let out = Command::new("buildah").args(args).output().unwrap();
    check(out, &format!("buildah {args:?}")).trim().to_string()
}

/// The built image of a base layer.
fn base_image(ws: &Path, base: &str) -> String {
    let out = layerbuild(ws, &["hash", &format!("//{base}/base")]);
    let digest = out.lines().next().unwrap().trim();
    format!(
        "localhost/layerbuild/{NAME}/{base}/base:{}",
        &digest[..12.min(digest.len())]
    )
}

/// `ansible-playbook -c community.general.chroot` with the play of `kind`
/// against a fresh working container of `image` (made and removed
/// untimed); the play's time.
fn plain(ws: &Path, image: &str, base: &str, kind: &str, tag: &str) -> Duration {
    let ctr = format!("{NAME}-{}-{tag}", std::process::id());
    buildah(&["from", "--name", &ctr, image]);
    let root = buildah(&["mount", &ctr]);
    let dir = play_dir(ws, PLAIN, base, kind);
    let inventory = ws.join(format!("plain-{}.ini", std::process::id()));
    write(&inventory, &format!("root ansible_host={root}\n"));
    let t = Instant::now();
    let out = Command::new("ansible-playbook")
        .current_dir(&dir)
        .arg("-i")
        .arg(&inventory)
        .args(["-c", "community.general.chroot", "tasks.yml"])
        .output()
        .unwrap();
    let d = t.elapsed();
    let _ = std::fs::remove_file(&inventory);
    buildah(&["rm", &ctr]);
    check(out, &format!("ansible-playbook {}", dir.display()));
    d
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The images of the task layers (the bases are kept for the next run).
fn remove_task_images() {
    let out = buildah(&["images", "--format", "{{.Name}}:{{.Tag}}"]);
    let prefix = format!("localhost/layerbuild/{NAME}/");
    for img in out.lines().filter(|l| {
        l.strip_prefix(&prefix)
            .is_some_and(|rest| !rest.starts_with("busybox/") && !rest.starts_with("debian/"))
    }) {
        let _ = Command::new("buildah").args(["rmi", "-f", img]).output();
    }
}

fn main() {
    common::require_buildah();
    let n = env_usize("LAYERBUILD_BENCH_TASKS", 50);
    let n_buildah = env_usize("LAYERBUILD_BENCH_BUILDAH_TASKS", n.min(10));
    let runs = env_usize("LAYERBUILD_BENCH_RUNS", 3);
    assert!(
        n > 0 && n_buildah > 0 && runs > 0,
        "LAYERBUILD_BENCH_TASKS, _BUILDAH_TASKS and _RUNS: at least 1"
    );
    let n_of = |col: &str| if col == "buildah" { n_buildah } else { n };
    let ws = std::env::var_os("LAYERBUILD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/layerbuild-bench-ansible-tasks"));
    std::fs::create_dir_all(&ws).unwrap();
    generate(&ws);
    write_plays(&ws, &n_of, "prepare");

    // The bases: built once (mmdebstrap takes a minute), then cached.
    let t = Instant::now();
    layerbuild(
        &ws,
        &[
            "build",
            "-j",
            "1",
            "--no-outputs",
            "//busybox/base",
            "//debian/base",
        ],
    );
    eprintln!("bases ready in {:.1} s", t.elapsed().as_secs_f64());
    let images: BTreeMap<&str, String> = BASES.iter().map(|b| (*b, base_image(&ws, b))).collect();

    // times[(column, base, kind)]: one duration per round; kind "empty"
    // is the 0-task play.
    let mut times: BTreeMap<(&str, &str, &str), Vec<f64>> = BTreeMap::new();
    let mut retries = 0;
    let columns: Vec<&str> = CONNECTIONS.iter().copied().chain([PLAIN]).collect();
    for round in 0..runs {
        write_plays(&ws, &n_of, &format!("{}-{round}", std::process::id()));
        for base in BASES {
            let kinds: Vec<&str> = ["empty"]
                .into_iter()
                .chain(ROWS.iter().filter(|(b, _)| *b == base).map(|(_, k)| *k))
                .collect();
            for &col in &columns {
                for &kind in &kinds {
                    let d = if col == PLAIN {
                        plain(
                            &ws,
                            &images[base],
                            base,
                            kind,
                            &format!("r{round}{base}{kind}"),
                        )
                    } else {
                        build(&ws, &label(base, col, kind), &mut retries)
                    };
                    eprintln!(
                        "round {round}: {col:8} {base:8} {kind:10} {:7.2} s",
                        d.as_secs_f64()
                    );
                    times
                        .entry((col, base, kind))
                        .or_default()
                        .push(d.as_secs_f64());
                }
            }
        }
        if round + 1 < runs {
            eprintln!("{}", table(&times, &columns, &n_of, round + 1));
        }
    }
    remove_task_images();
    if retries > 0 {
        eprintln!("{retries} failed build(s) retried");
    }
    println!("{}", table(&times, &columns, &n_of, runs));
}

/// The markdown table of `times` (per column, base and kind, one time per
/// round; kind `empty`: no tasks): per-task cost by kind and base, then
/// the start-up (0-task time) per base.
fn table(
    times: &BTreeMap<(&str, &str, &str), Vec<f64>>,
    columns: &[&str],
    n_of: &dyn Fn(&str) -> usize,
    rounds: usize,
) -> String {
    // Per-task cost of each round (paired with its round's 0-task run).
    let per_task = |col: &str, base: &str, kind: &str| -> Option<f64> {
        let t = times.get(&(col, base, kind))?;
        let t0 = times.get(&(col, base, "empty"))?;
        let n = n_of(col) as f64;
        Some(median(t.iter().zip(t0).map(|(a, b)| (a - b) / n).collect()))
    };
    let ms = |s: Option<f64>| s.map_or("".into(), |s| format!("{:.0} ms", s * 1000.0));
    let head: Vec<String> = columns
        .iter()
        .map(|c| match *c {
            PLAIN => format!(
                "plain `ansible-playbook -c community.general.chroot` ({} tasks)",
                n_of(c)
            ),
            c => format!("{c} via layerbuild ({} tasks)", n_of(c)),
        })
        .collect();
    let mut out = format!(
        "\nper-task cost = (time with N tasks - time with none) / N, median of {rounds} round(s)\n\n\
         | task kind | base | {} |\n|---|---|{}\n",
        head.join(" | "),
        "---|".repeat(columns.len())
    );
    for (base, kind) in ROWS {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| ms(per_task(c, base, kind)))
            .collect();
        out.push_str(&format!("| `{kind}` | {base} | {} |\n", cells.join(" | ")));
    }
    for base in BASES {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                times
                    .get(&(*c, base, "empty"))
                    .map_or("".into(), |t| format!("{:.2} s", median(t.clone())))
            })
            .collect();
        out.push_str(&format!(
            "| start-up (0 tasks) | {base} | {} |\n",
            cells.join(" | ")
        ));
    }
    out
}
