//! Benchmark: fingerprinting and no-op builds of a large generated workspace.
//!
//! Generates 200 layers (a busybox `//base/os` and 19 image types, each a
//! chain of layers below it) whose 199 playbooks use one role each of 100
//! files: 20,099 files in all. Then measures:
//!   1. fingerprinting all 200 layers in-process (library call), and peak RSS,
//!      against plain hashing of the same files (the cost of the Ansible and
//!      variable analysis);
//!   2. the first, cold `build //...` with real buildah and ansible-playbook
//!      (per-layer overhead of buildah + Ansible + ours);
//!   3. a no-op `build //...` (every layer cached) of the real binary;
//!   4. `ls` of the real binary (fingerprint + cache lookups).
//!
//! Run with `benches/run.sh` (or `cargo bench --bench fingerprint`).
//! `LAYERBUILD_BENCH_SKIP_BUILD=1` measures fingerprinting only.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TYPES: usize = 19;
const LAYERS: usize = 200;
const FILES_PER_ROLE: usize = 100;

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
    let mut files = 2;
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

fn bin() -> std::path::PathBuf {
    // benches run from target/release/deps; the binary is one level up.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("layerbuild");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release ({} missing)",
        bin.display()
    );
    bin
}

fn run(root: &Path, args: &[&str]) -> Duration {
    let (out, d) = time(|| {
        Command::new(bin())
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .unwrap()
    });
    assert!(
        out.status.success(),
        "layerbuild {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    let name = format!("bench{}", std::process::id());
    let (files, generated) = time(|| generate(&root, &name));
    println!("workspace: {LAYERS} layers, {files} files (generated in {generated:.2?})");

    let ws = layerbuild::workspace::Workspace::load(&root).unwrap();
    let graph = layerbuild::graph::LayerGraph::new(&ws).unwrap();
    let labels = graph.select(&[layerbuild::label::Pattern::All]).unwrap();
    let system = ws.system(None).unwrap();
    let mut runs = vec![];
    for _ in 0..5 {
        let (prints, d) =
            time(|| layerbuild::fingerprint::fingerprint(&ws, system, &labels).unwrap());
        assert_eq!(prints.len(), LAYERS);
        runs.push(d);
    }
    println!(
        "fingerprint {LAYERS} layers / {files} files (in-process): median {:.0?}, min {:.0?}  (peak RSS {:.0} MiB)",
        median(runs.clone()),
        runs.iter().min().unwrap(),
        peak_rss_mib()
    );

    // Plain file hashing of the same trees, for the cost of the variable analysis.
    let roots: std::collections::BTreeSet<String> = ws
        .layers
        .values()
        .filter_map(|l| l.source.clone())
        .chain(std::iter::once("inventory/bench".to_string()))
        .collect();
    let mut plain = vec![];
    for _ in 0..9 {
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
    let full_min = *runs.iter().min().unwrap();
    let bare_min = *plain.iter().min().unwrap();
    let (full, bare) = (median(runs.clone()), median(plain));
    println!(
        "plain hashing of the same {files} files: median {bare:.0?}, min {bare_min:.0?}; \
         fingerprint with Ansible/variable analysis / plain hashing: {:.2}x (min), {:.2}x (median)",
        full_min.as_secs_f64() / bare_min.as_secs_f64(),
        full.as_secs_f64() / bare.as_secs_f64()
    );

    let mut ls = vec![];
    for _ in 0..3 {
        ls.push(run(&root, &["ls"]));
    }
    println!("ls (binary, no cache yet): median {:.0?}", median(ls));

    if std::env::var_os("LAYERBUILD_BENCH_SKIP_BUILD").is_some() {
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

    let cold = run(&root, &["build", "//..."]);
    println!(
        "first build //... (cold, real buildah + ansible-playbook, -j {}): {:.1?} ({:.2} s per layer)",
        ws.build.jobs,
        cold,
        cold.as_secs_f64() / LAYERS as f64
    );
    let mut noop = vec![];
    for _ in 0..5 {
        noop.push(run(&root, &["build", "//..."]));
    }
    println!(
        "no-op build //... (binary, all {LAYERS} cached): median {:.0?}, min {:.0?}",
        median(noop.clone()),
        noop.iter().min().unwrap()
    );
    let mut ls = vec![];
    for _ in 0..3 {
        ls.push(run(&root, &["ls"]));
    }
    println!("ls (binary, all cached): median {:.0?}", median(ls));

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
}
