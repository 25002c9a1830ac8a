//! The variable analysis: any text read as a play's YAML, as a template,
//! and (when it is JSON) as a variable's value; never a panic, and errors
//! render. The token scan of a template never reads fewer names than the
//! parse does (it is what the analysis uses when it can).
#![no_main]

use layerbuild::fingerprint::vars::Analyzer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut a = Analyzer::default();
    match a.text(text, "roles/r/tasks/main.yml", false) {
        Ok(u) => {
            let _ = u.fallback;
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Err(e) = a.text(text, "roles/r/templates/t.j2", true) {
        let _ = e.to_string();
    }
    if let (Some(scanned), Ok(parsed)) = (
        layerbuild::fingerprint::jinja::scan(text),
        layerbuild::fingerprint::jinja::undeclared(text),
    ) {
        assert!(
            scanned.is_superset(&parsed),
            "the scan misses {:?}",
            parsed.difference(&scanned).collect::<Vec<_>>()
        );
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = a.value(&v, "Layerfile.toml");
    }
});
