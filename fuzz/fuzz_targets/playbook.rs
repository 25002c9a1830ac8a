//! Role and input discovery of a playbook: any text as the playbook of a
//! small source directory (one role, a task file, a vars file); never a
//! panic, and errors render.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use layerbuild::fingerprint::ansible::discover;
use libfuzzer_sys::fuzz_target;

fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("layerbuild-fuzz-pb-{}", std::process::id()));
        for (rel, text) in [
            (
                "src/roles/r/tasks/main.yml",
                "- include_tasks: other.yml\n- template: {src: t.j2, dest: /t}\n",
            ),
            (
                "src/roles/r/tasks/other.yml",
                "- debug: {msg: \"{{ y }}\"}\n",
            ),
            ("src/roles/r/templates/t.j2", "{{ x }}\n"),
            ("src/roles/r/meta/main.yml", "dependencies: [{role: d}]\n"),
            ("src/roles/d/tasks/main.yml", "- debug: {var: z}\n"),
            ("src/vars/common.yml", "a: 1\n"),
            ("src/files/f.conf", "f\n"),
        ] {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        root
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let root = root();
    // One playbook file per process: libFuzzer runs inputs one at a time.
    let pb = root.join("src/site.yml");
    if std::fs::write(&pb, text).is_err() {
        return;
    }
    let obs = layerbuild::fingerprint::observe::Observer::new();
    match discover(&obs, root, "src", "site.yml", &["src/roles".to_string()], &[]) {
        Ok(found) => {
            let _ = found.roles.len();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
