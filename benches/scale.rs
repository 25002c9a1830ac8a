//! Benchmark: the cost of a dry run and of a no-op build as workspaces
//! grow, with one shared source and with a source per layer.
//!
//! Two shapes of workspace, each of N playbook layers under a busybox
//! `//base/os`, as 25 image types (chains of N/25 layers), every layer's
//! role holding 100 files (a task file, defaults, 50 Jinja templates, 48
//! plain files):
//! - `shared`: one source `site/` holding all N playbooks (`site/l0001.yml`
//!   ...) and all roles (`site/roles/r0001/` ...), a small `common` role
//!   every playbook uses, and `site/group_vars/all.yml` (the single config
//!   repository of the talk);
//! - `split`: a source per layer (`src/l0001/play.yml`,
//!   `src/l0001/roles/r0001/`).
//!
//! Both have an inventory with group variables. For each shape, in the same
//! run, against `cat` of the same files (`find . -type f -not -path
//! './cache/*' -exec cat {} + >/dev/null`; page cache left as it is; a
//! warm-up run of each first):
//! 1. a cold `build //... --dry-run` (no cache directory), median of 3,
//!    alternating with cat (median of 3);
//! 2. the second `build //... --dry-run` of the never-built workspace,
//!    median of 5; it must read no file (`LAYERBUILD_STATS=1`);
//! 3. at the main size only (500, or the middle of the sizes given), a cold
//!    `build //...` with real buildah and ansible-playbook, then the no-op
//!    `build //...`, median of 5, which must read no file either;
//! 4. 1 and 2 at N = 250, 500 and 1000, with the time and peak RSS per
//!    layer at each size.
//!
//! Peak RSS is GNU time's `%M` of every timed run (the largest is shown;
//! its goal is set for the main size, its growth judged across sizes);
//! `cat` runs under GNU time too, so both carry its start-up. Prints a
//! Markdown table of the figures, with the goals, at the end; then fails
//! (exit 1) if a run that may read no file read some.
//!
//! Run with `scripts/bench scale` (or `cargo bench --bench scale`; build the
//! binary first, `cargo build --release`). Environment:
//! - `LAYERBUILD_BENCH_SIZES=50,100`: other sizes (smoke tests);
//! - `LAYERBUILD_BENCH_SKIP_BUILD=1`: skips 3 (no buildah build);
//! - `LAYERBUILD_BENCH_DIR=DIR`: keeps the workspaces in `DIR/shared-N` and
//!   `DIR/split-N` (for profiling; the images built are removed anyway).
//!
//! `cargo bench --bench scale -- --generate-only DIR N` writes both shapes
//! of size N into `DIR/shared-N` and `DIR/split-N` and exits (no binary
//! needed).

mod common;
use common::bin;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Image types: chains of layers below `//base/os`.
const TYPES: usize = 25;
/// Jinja templates of each role (`templates/tNN.conf.j2`).
const TEMPLATES: usize = 50;
/// Plain files of each role: two named ones under `files/` and the rest
/// under `files/conf.d/` (copied as a directory).
const PLAIN: usize = 48;
/// Templates rendered by a task of their own; the others by one loop.
const LITERAL_TEMPLATES: usize = 3;
/// Inventory groups, one per image type in turn.
const GROUPS: [&str; 3] = ["Compute", "UAN", "Login"];
const SIZES: [usize; 3] = [250, 500, 1000];
const MAIN_SIZE: usize = 500;

const COLD_RUNS: usize = 3;
const SECOND_RUNS: usize = 5;
const NOOP_RUNS: usize = 5;
const CAT: &str = "find . -type f -not -path './cache/*' -exec cat {} + >/dev/null";

const RATIO_COLD: f64 = 1.2;
const RATIO_WARM: f64 = 0.3;
const WARM_MS: f64 = 200.0;
const RSS_MIB: f64 = 64.0;
/// Growth exponent between the smallest and largest size (1 is linear).
const GROWTH: f64 = 1.2;

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Shared,
    Split,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Shared => "shared",
            Shape::Split => "split",
        }
    }
}

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

/// A role's task file: a debug using variables, a template preview (the
/// one module that runs on the busybox image: `debug` runs on the
/// controller), `template:` tasks for every template (three by name, the
/// rest in a loop over literal names), and `copy:` of a directory and of
/// two named files. The busybox image has no Python, so the modules that
/// run on the node are off (`bench_deploy`); the analysis reads them all.
fn tasks(role: &str) -> String {
    let mut s = format!(
        "---\n# Role {role}: configuration files rendered from templates, plain files copied.\n\
         - name: \"Configure {role} for {{{{ cluster_name }}}}\"\n  ansible.builtin.debug:\n    \
         msg: \"{{{{ cluster_name }}}} ({{{{ node_role | default('node') }}}}): port {{{{ {role}_port }}}}, \
         ntp {{{{ ntp_servers | join(',') }}}}\"\n\n\
         - name: Preview the main configuration\n  ansible.builtin.debug:\n    \
         msg: \"{{{{ lookup('template', 't00.conf.j2') }}}}\"\n  when: {role}_preview | bool\n\n\
         - name: Configuration directory\n  ansible.builtin.file:\n    path: /etc/bench/{role}/conf.d\n    \
         state: directory\n    mode: \"0755\"\n  when: bench_deploy | default(false)\n\n"
    );
    for t in 0..LITERAL_TEMPLATES {
        s.push_str(&format!(
            "- name: Render t{t:02}.conf\n  ansible.builtin.template:\n    src: t{t:02}.conf.j2\n    \
             dest: /etc/bench/{role}/t{t:02}.conf\n    mode: \"0644\"\n  when: bench_deploy | default(false)\n\n"
        ));
    }
    s.push_str(&format!(
        "- name: Render the other configuration files\n  ansible.builtin.template:\n    \
         src: \"{{{{ item }}}}.j2\"\n    dest: \"/etc/bench/{role}/{{{{ item }}}}\"\n    mode: \"0644\"\n  loop:\n"
    ));
    for t in LITERAL_TEMPLATES..TEMPLATES {
        s.push_str(&format!("    - t{t:02}.conf\n"));
    }
    s.push_str(&format!(
        "  when: bench_deploy | default(false)\n\n\
         - name: Install conf.d\n  ansible.builtin.copy:\n    src: conf.d/\n    dest: /etc/bench/{role}/conf.d/\n    \
         mode: \"0644\"\n  when: bench_deploy | default(false)\n\n\
         - name: Install the limits and sysctl settings\n  ansible.builtin.copy:\n    src: \"{{{{ item }}}}\"\n    \
         dest: \"/etc/bench/{role}/{{{{ item }}}}\"\n    mode: \"0644\"\n  loop:\n    - limits.conf\n    - sysctl.conf\n  \
         when: bench_deploy | default(false)\n"
    ));
    s
}

/// Template `t` of `role`: variables, filters, loops and conditionals.
fn template(role: &str, t: usize, filler: &str) -> String {
    format!(
        "# {{{{ ansible_managed | default('managed by layerbuild') }}}}\n\
         # {role} template {t:02} for {{{{ cluster_name }}}}\n\
         [main]\ncluster = {{{{ cluster_name }}}}\ndomain = {{{{ site_domain | default('example.org') | lower }}}}\n\
         role = {{{{ node_role | default('node') | upper }}}}\nport = {{{{ {role}_port | int + {t} }}}}\n\
         {{% for s in ntp_servers %}}\nserver {{{{ s }}}} iburst  # {{{{ loop.index }}}}\n{{% endfor %}}\n\
         {{% if {role}_features | length > 0 %}}\nfeatures = {{{{ {role}_features | join(' ') }}}}\n\
         {{% else %}}\nfeatures = none\n{{% endif %}}\n\
         {{% for k, v in {role}_limits | dictsort %}}\n{{{{ k }}}} = {{{{ v }}}}\n{{% endfor %}}\n\
         {filler}"
    )
}

/// One role of 100 files under `dir`; returns the number of files.
fn role(dir: &Path, role: &str, n: usize, filler: &str) -> usize {
    write(&dir.join("tasks/main.yml"), &tasks(role));
    write(
        &dir.join("defaults/main.yml"),
        &format!(
            "---\n{role}_port: {}\n{role}_preview: true\n{role}_features: [ib, nfs, lustre]\n\
             {role}_limits:\n  nofile: 65536\n  memlock: unlimited\n  nproc: {}\n",
            10000 + n,
            4096 + n
        ),
    );
    for t in 0..TEMPLATES {
        write(
            &dir.join(format!("templates/t{t:02}.conf.j2")),
            &template(role, t, filler),
        );
    }
    write(
        &dir.join("files/limits.conf"),
        &format!("# {role}\n* soft memlock unlimited\n* hard memlock unlimited\n{filler}"),
    );
    write(
        &dir.join("files/sysctl.conf"),
        &format!("# {role}\nvm.swappiness = 10\nkernel.pid_max = 4194304\n{filler}"),
    );
    for f in 2..PLAIN {
        write(
            &dir.join(format!("files/conf.d/f{f:02}.conf")),
            &format!("# {role} file {f}\n{filler}"),
        );
    }
    2 + TEMPLATES + PLAIN
}

/// Writes a workspace of `shape` with `n` playbook layers into `root`
/// (emptied first); returns the number of files.
fn generate(root: &Path, shape: Shape, n: usize, name: &str) -> usize {
    let _ = std::fs::remove_dir_all(root);
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
    let hosts: String = GROUPS.iter().map(|g| format!("[{g}]\n")).collect();
    write(&root.join("inventory/bench/hosts"), &hosts);
    write(
        &root.join("inventory/bench/group_vars/all.yml"),
        "---\nntp_servers: [ntp1.example.org, ntp2.example.org]\ntimezone: UTC\n",
    );
    for g in GROUPS {
        write(
            &root.join(format!("inventory/bench/group_vars/{g}.yml")),
            &format!("---\nnode_role: {}\n", g.to_lowercase()),
        );
    }
    let mut files = 1 + 2 + GROUPS.len() + 1; // setup script, inventory, Layerfile
    let filler: String = (0..12)
        .map(|i| format!("# line {i}: the quick brown fox jumps over the lazy dog\n"))
        .collect();
    if shape == Shape::Shared {
        write(
            &root.join("site/group_vars/all.yml"),
            "---\nsite_domain: HPC.Example.Org\nsite_admins: [alice, bob]\nbench_deploy: false\n",
        );
        let common = root.join("site/roles/common");
        write(
            &common.join("tasks/main.yml"),
            "---\n- name: Site banner\n  ansible.builtin.debug:\n    msg: \"{{ lookup('template', 'motd.j2') }}\"\n\n\
             - name: Install the motd\n  ansible.builtin.template:\n    src: motd.j2\n    dest: /etc/motd\n    \
             mode: \"0644\"\n  when: bench_deploy | default(false)\n",
        );
        write(
            &common.join("templates/motd.j2"),
            "{{ cluster_name }} node, {{ site_domain | lower }}\n\
             {% for a in site_admins %}admin: {{ a }}\n{% endfor %}{{ motd_extra }}\n",
        );
        write(&common.join("defaults/main.yml"), "---\nmotd_extra: \"\"\n");
        files += 4;
    }
    let types = TYPES.min(n);
    let per_type = n.div_ceil(types);
    for i in 1..=n {
        let (t, pos) = ((i - 1) / per_type, (i - 1) % per_type);
        let label = format!("t{t:02}/l{i:04}");
        let parent = if pos == 0 {
            "//base/os".to_string()
        } else {
            format!("//t{t:02}/l{:04}", i - 1)
        };
        let group = GROUPS[t % GROUPS.len()];
        let r = format!("r{i:04}");
        let (src, playbook, roles) = match shape {
            Shape::Shared => ("site".to_string(), format!("l{i:04}.yml"), "    - common\n"),
            Shape::Split => (format!("src/l{i:04}"), "play.yml".to_string(), ""),
        };
        lf.push_str(&format!(
            "[layers.\"{label}\"]\nparent = \"{parent}\"\nsource = \"{src}\"\nplaybook = \"{playbook}\"\ngroups = [\"{group}\"]\n\n"
        ));
        write(
            &root.join(&src).join(&playbook),
            &format!(
                "---\n- name: Layer l{i:04} (image type t{t:02})\n  hosts: {group}\n  gather_facts: false\n  roles:\n{roles}    - {r}\n"
            ),
        );
        files += 1 + role(&root.join(&src).join("roles").join(&r), &r, i, &filler);
    }
    write(&root.join("Layerfile.toml"), &lf);
    files
}

/// One timed run: wall time, peak RSS and what its stats lines said.
#[derive(Clone, Copy)]
struct Run {
    time: Duration,
    rss_kib: u64,
    /// Files read and hashed.
    hashed: usize,
    /// Files read by the play analysis.
    analysed: usize,
}

/// Runs `program args` in `dir` under GNU time (`%M`, to a file); wall
/// time, peak RSS in KiB and stderr.
fn timed(dir: &Path, program: &Path, args: &[&str], tmp: &Path) -> (Duration, u64, String) {
    let rss = tmp.join("rss");
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(program)
        .args(args)
        .current_dir(dir)
        .env("LAYERBUILD_STATS", "1");
    let t = Instant::now();
    let out = c
        .output()
        .expect("GNU time at /usr/bin/time (apt-get install time)");
    let d = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} failed in {}:\n{err}",
        program.display(),
        dir.display()
    );
    let kib = std::fs::read_to_string(&rss)
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0);
    (d, kib, err)
}

/// `layerbuild -C root args`, with `LAYERBUILD_STATS=1`.
fn lb(root: &Path, args: &[&str], tmp: &Path) -> Run {
    let root_s = root.to_str().unwrap();
    let mut all = vec!["-C", root_s];
    all.extend_from_slice(args);
    let (time, rss_kib, err) = timed(root, &bin(), &all, tmp);
    // "layerbuild stats: H files read and hashed, R from the stat cache,
    // A read by the analysis" (one line per fingerprint; summed).
    let (mut hashed, mut analysed, mut lines) = (0, 0, 0);
    for l in err
        .lines()
        .filter_map(|l| l.strip_prefix("layerbuild stats: "))
    {
        let nums: Vec<usize> = l
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        hashed += nums[0];
        analysed += nums[2];
        lines += 1;
    }
    assert!(lines > 0, "no stats line from layerbuild {args:?}:\n{err}");
    Run {
        time,
        rss_kib,
        hashed,
        analysed,
    }
}

/// `cat` of every file but the cache, under GNU time like the binary.
fn cat(root: &Path, tmp: &Path) -> Duration {
    timed(root, Path::new("/bin/sh"), &["-c", CAT], tmp).0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", secs(d) * 1000.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn max_rss(runs: &[Run]) -> u64 {
    runs.iter().map(|r| r.rss_kib).max().unwrap_or(0)
}

fn median_of(runs: &[Run]) -> Duration {
    median(runs.iter().map(|r| r.time).collect())
}

/// "median X ms, min Y ms".
fn spread(v: &[Duration]) -> String {
    format!(
        "median {}, min {}",
        ms(median(v.to_vec())),
        ms(*v.iter().min().unwrap())
    )
}

fn verdict(ok: bool) -> String {
    if ok { "met" } else { "**not met**" }.to_string()
}

/// The figures of one shape at one size.
struct Figures {
    shape: Shape,
    n: usize,
    files: usize,
    cold: Vec<Run>,
    cat: Vec<Duration>,
    second: Vec<Run>,
}

struct Table {
    rows: Vec<[String; 5]>,
    /// Runs that read files where none may be read: the benchmark fails
    /// once the table is printed.
    failures: Vec<String>,
}

impl Table {
    fn row(&mut self, at: &str, what: &str, figure: String, goal: &str, met: Option<bool>) {
        let r = [
            at.to_string(),
            what.to_string(),
            figure,
            goal.to_string(),
            met.map(verdict).unwrap_or_default(),
        ];
        println!("  {}: {}: {} {}", r[0], r[1], r[2], r[4]);
        self.rows.push(r);
    }

    /// A row for the files `runs` read, which must be none (a failure
    /// otherwise, reported after the table).
    fn reads(&mut self, at: &str, what: &str, runs: &[Run]) {
        let (h, a) = runs
            .iter()
            .fold((0, 0), |(h, a), r| (h.max(r.hashed), a.max(r.analysed)));
        let none = h == 0 && a == 0;
        if !none {
            self.failures.push(format!(
                "{at}: the {what} read files ({h} read and hashed, {a} read by the analysis)"
            ));
        }
        self.row(
            at,
            &format!(
                "files read by the {what} (`LAYERBUILD_STATS=1`, largest of {} runs)",
                runs.len()
            ),
            format!("{h} read and hashed, {a} read by the analysis"),
            "0",
            Some(none),
        );
    }

    fn print(&self) {
        println!("\n| shape, layers | measurement | figure | goal | met? |\n|---|---|---|---|---|");
        for [a, b, c, d, e] in &self.rows {
            println!("| {a} | {b} | {c} | {d} | {e} |");
        }
    }
}

/// Measures 1 and 2 (cold and second dry runs against cat) of `root`.
/// The goals of the issue are set for the main size (500 layers); at the
/// others the figures are shown and their growth is judged (`growth`).
fn dry_runs(root: &Path, tmp: &Path, t: &mut Table, f: &mut Figures, main: bool) {
    let at = format!("{}, {}", f.shape.name(), f.n);
    let cold = || {
        let _ = std::fs::remove_dir_all(root.join("cache"));
        lb(root, &["build", "//...", "--dry-run"], tmp)
    };
    // Warm-up of each, then alternating.
    let warm = cold();
    cat(root, tmp);
    for _ in 0..COLD_RUNS {
        f.cold.push(cold());
        f.cat.push(cat(root, tmp));
    }
    let (c, k) = (median_of(&f.cold), median(f.cat.clone()));
    let last = f.cold.last().unwrap();
    assert!(
        warm.hashed > 0 && last.hashed == warm.hashed,
        "a cold dry run reads every input"
    );
    let cold_times: Vec<Duration> = f.cold.iter().map(|r| r.time).collect();
    t.row(
        &at,
        "cold `build //... --dry-run` (no cache dir)",
        format!(
            "{} ({} files read and hashed, {} read by the analysis; {} files in the workspace)",
            spread(&cold_times),
            last.hashed,
            last.analysed,
            f.files
        ),
        "",
        None,
    );
    t.row(&at, "`cat` of the same files", spread(&f.cat), "", None);
    let ratio = secs(c) / secs(k);
    t.row(
        &at,
        "cold dry run / cat (medians)",
        format!("{ratio:.2}x"),
        &format!("≤ {RATIO_COLD}x"),
        Some(ratio <= RATIO_COLD),
    );
    let rss = mib(max_rss(&f.cold));
    rss_row(t, &at, "peak RSS of the cold dry run", rss, main);

    for _ in 0..SECOND_RUNS {
        f.second
            .push(lb(root, &["build", "//...", "--dry-run"], tmp));
    }
    let s = median_of(&f.second);
    let times: Vec<Duration> = f.second.iter().map(|r| r.time).collect();
    t.row(
        &at,
        "second `build //... --dry-run`, never built",
        spread(&times),
        &format!("≤ {WARM_MS:.0} ms"),
        Some(secs(s) * 1000.0 <= WARM_MS),
    );
    t.reads(&at, "second dry run", &f.second);
    let ratio = secs(s) / secs(k);
    t.row(
        &at,
        "second dry run / cat (medians)",
        format!("{ratio:.2}x"),
        &format!("≤ {RATIO_WARM}x"),
        Some(ratio <= RATIO_WARM),
    );
    let rss = mib(max_rss(&f.second));
    rss_row(t, &at, "peak RSS of the second dry run", rss, main);
}

/// A peak RSS against the goal at the main size; elsewhere shown, its
/// growth judged with the others' (`growth`).
fn rss_row(t: &mut Table, at: &str, what: &str, rss: f64, main: bool) {
    if main {
        t.row(
            at,
            what,
            format!("{rss:.0} MiB"),
            &format!("≤ {RSS_MIB:.0} MiB"),
            Some(rss <= RSS_MIB),
        );
    } else {
        t.row(
            at,
            what,
            format!("{rss:.0} MiB"),
            "linear growth (below)",
            None,
        );
    }
}

/// Measures 3: a real cold build, then no-op builds; removes the images.
fn builds(root: &Path, name: &str, tmp: &Path, t: &mut Table, f: &Figures) {
    let at = format!("{}, {}", f.shape.name(), f.n);
    let cold = lb(root, &["build", "//..."], tmp);
    t.row(
        &at,
        "cold `build //...` (real buildah + ansible-playbook)",
        format!(
            "{:.1} s ({:.2} s per layer; peak RSS {:.0} MiB)",
            secs(cold.time),
            secs(cold.time) / (f.n + 1) as f64,
            mib(cold.rss_kib)
        ),
        "",
        None,
    );
    let noop: Vec<Run> = (0..NOOP_RUNS)
        .map(|_| lb(root, &["build", "//..."], tmp))
        .collect();
    let m = median_of(&noop);
    let times: Vec<Duration> = noop.iter().map(|r| r.time).collect();
    t.row(
        &at,
        "no-op `build //...` after the build",
        spread(&times),
        &format!("≤ {WARM_MS:.0} ms"),
        Some(secs(m) * 1000.0 <= WARM_MS),
    );
    t.reads(&at, "no-op build", &noop);
    let ratio = secs(m) / secs(median(f.cat.clone()));
    t.row(
        &at,
        "no-op build / cat (medians)",
        format!("{ratio:.2}x"),
        &format!("≤ {RATIO_WARM}x"),
        Some(ratio <= RATIO_WARM),
    );
    let rss = mib(max_rss(&noop));
    t.row(
        &at,
        "peak RSS of the no-op build",
        format!("{rss:.0} MiB"),
        &format!("≤ {RSS_MIB:.0} MiB"),
        Some(rss <= RSS_MIB),
    );
    remove_images(name);
}

fn remove_images(name: &str) {
    let Ok(out) = Command::new("buildah")
        .args(["images", "--format", "{{.Name}}:{{.Tag}}"])
        .output()
    else {
        return;
    };
    let prefix = format!("localhost/layerbuild/{name}/");
    let imgs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    if !imgs.is_empty() {
        let _ = Command::new("buildah")
            .args(["rmi", "-f"])
            .args(&imgs)
            .output();
    }
}

/// The per-layer time and peak RSS of `pick` at each size, and the growth
/// exponent between the smallest and the largest (1 is linear, 2 quadratic).
fn scaling(
    t: &mut Table,
    shape: Shape,
    figs: &[&Figures],
    what: &str,
    pick: fn(&Figures) -> &[Run],
) {
    let per: Vec<(usize, f64, f64)> = figs
        .iter()
        .map(|f| {
            let runs = pick(f);
            (f.n, secs(median_of(runs)), mib(max_rss(runs)))
        })
        .collect();
    let line = per
        .iter()
        .map(|(n, s, m)| {
            format!(
                "N={n}: {:.2} ms, {:.0} KiB per layer ({:.0} ms, {m:.0} MiB)",
                s * 1000.0 / *n as f64,
                m * 1024.0 / *n as f64,
                s * 1000.0
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let (first, last) = (per.first().unwrap(), per.last().unwrap());
    let (growth, met) = if last.0 > first.0 {
        let x = (last.0 as f64 / first.0 as f64).ln();
        let (et, em) = ((last.1 / first.1).ln() / x, (last.2 / first.2).ln() / x);
        let added = (last.0 - first.0) as f64;
        (
            format!(
                "growth exponent: time {et:.2}, RSS {em:.2}; each added layer: {:.2} ms, {:.0} KiB",
                (last.1 - first.1) * 1000.0 / added,
                (last.2 - first.2) * 1024.0 / added
            ),
            Some(et <= GROWTH && em <= GROWTH),
        )
    } else {
        ("growth: one size only".to_string(), None)
    };
    t.row(
        &format!("{}, all sizes", shape.name()),
        &format!("{what}: per layer"),
        format!("{line}; {growth}"),
        &format!("linear: exponent ≤ {GROWTH}"),
        met,
    );
}

fn machine() -> String {
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    format!(
        "{} cores, {} GiB, {os}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_gib.floor()
    )
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn sizes() -> Vec<usize> {
    let mut v: Vec<usize> = match std::env::var("LAYERBUILD_BENCH_SIZES") {
        Ok(s) => s
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("LAYERBUILD_BENCH_SIZES: '{n}' is not a number"))
            })
            .collect(),
        Err(_) => SIZES.to_vec(),
    };
    v.sort_unstable();
    v.dedup();
    assert!(
        !v.is_empty() && v[0] > 0,
        "LAYERBUILD_BENCH_SIZES: sizes of at least 1"
    );
    v
}

fn main() {
    // `cargo bench` passes --bench; `-- --generate-only DIR N` only writes
    // the workspaces.
    let args: Vec<String> = std::env::args().collect();
    if let Some(p) = args.iter().position(|a| a == "--generate-only") {
        let (Some(dir), Some(n)) = (
            args.get(p + 1),
            args.get(p + 2).and_then(|n| n.parse::<usize>().ok()),
        ) else {
            eprintln!("usage: cargo bench --bench scale -- --generate-only DIR N");
            std::process::exit(2);
        };
        for shape in [Shape::Shared, Shape::Split] {
            let root = Path::new(dir).join(format!("{}-{n}", shape.name()));
            let files = generate(&root, shape, n, &format!("scale-{}-{n}", shape.name()));
            println!("{}: {n} layers, {files} files", root.display());
        }
        return;
    }

    let sizes = sizes();
    let main_size = if sizes.contains(&MAIN_SIZE) {
        MAIN_SIZE
    } else {
        sizes[sizes.len() / 2]
    };
    let skip_build = std::env::var_os("LAYERBUILD_BENCH_SKIP_BUILD").is_some();
    if !skip_build {
        let buildah_ok = Command::new("buildah")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            buildah_ok,
            "the build benchmark needs buildah and ansible (see README); set LAYERBUILD_BENCH_SKIP_BUILD=1 to skip it"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("LAYERBUILD_BENCH_DIR").map(PathBuf::from);
    let base = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let load_before = load();
    println!(
        "scale: sizes {sizes:?} (builds at {}), machine: {}, load {load_before}",
        if skip_build {
            "none".to_string()
        } else {
            main_size.to_string()
        },
        machine()
    );
    let mut t = Table {
        rows: vec![],
        failures: vec![],
    };
    let mut all: Vec<Figures> = vec![];
    for &n in &sizes {
        for shape in [Shape::Shared, Shape::Split] {
            let root = base.join(format!("{}-{n}", shape.name()));
            let name = format!("scale{}-{}-{n}", std::process::id(), shape.name());
            let start = Instant::now();
            let files = generate(&root, shape, n, &name);
            println!(
                "{}: {n} layers, {files} files (generated in {:.1?})",
                root.display(),
                start.elapsed()
            );
            // Files younger than 2 s are racy: the memo would not be written.
            std::thread::sleep(Duration::from_millis(2100));
            let mut f = Figures {
                shape,
                n,
                files,
                cold: vec![],
                cat: vec![],
                second: vec![],
            };
            dry_runs(&root, tmp.path(), &mut t, &mut f, n == main_size);
            if n == main_size && !skip_build {
                builds(&root, &name, tmp.path(), &mut t, &f);
            }
            if keep.is_none() {
                let _ = std::fs::remove_dir_all(&root);
            }
            all.push(f);
        }
    }
    for shape in [Shape::Shared, Shape::Split] {
        let figs: Vec<&Figures> = all.iter().filter(|f| f.shape == shape).collect();
        scaling(&mut t, shape, &figs, "cold dry run", |f| &f.cold);
        scaling(&mut t, shape, &figs, "second dry run", |f| &f.second);
    }
    t.print();
    println!(
        "\nmachine: {}, load {load_before} before, {} after",
        machine(),
        load()
    );
    if !t.failures.is_empty() {
        eprintln!("\nfailed: runs that may read no file read some:");
        for f in &t.failures {
            eprintln!("  {f}");
        }
        std::process::exit(1);
    }
}
