//! Layerfile parsing and validation: any text is either a workspace or
//! errors that render (file:line, the source line, a caret), never a panic.
//! A workspace that validates also gets its layer graph built.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use layerbuild::workspace::Workspace;
use libfuzzer_sys::fuzz_target;

/// A small workspace on disk, so some paths a Layerfile names exist.
fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("layerbuild-fuzz-{}", std::process::id()));
        for (rel, text) in [
            ("scripts/a.sh", "echo a\n"),
            ("src/site.yml", "- hosts: all\n  roles: [r]\n"),
            (
                "src/roles/r/tasks/main.yml",
                "- debug: {msg: \"{{ x }}\"}\n",
            ),
            ("inv/hosts", "[Compute]\nh1\n"),
            ("packages.txt", "chrony\n# c\nvim\n"),
            ("more.toml", "[layers.\"x/y\"]\nparent = \"scratch\"\n"),
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
    let (ws, errors) = Workspace::check_text(root(), text);
    for e in &errors {
        let _ = e.to_string();
    }
    if let (Some(ws), true) = (ws, errors.is_empty()) {
        if let Ok(g) = layerbuild::graph::LayerGraph::new(&ws) {
            let _ = g.select(&[layerbuild::label::Pattern::All]);
        }
        let _ = ws.system(None);
    }
});
