//! Inventory reading: any text as an INI inventory, a YAML inventory and a
//! group_vars file; never a panic.
#![no_main]

use layerbuild::fingerprint::inventory::InventoryModel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut m = InventoryModel::default();
    let _ = m.read_text("hosts", text);
    let _ = m.read_text("hosts.yml", text);
    let _ = m.read_text("group_vars/Compute.yml", text);
    let _ = m.read_text("host_vars/h1/main.yml", text);
    let groups = m.effective_groups(&["Compute".to_string()], "compute-node");
    for d in &m.defs {
        let _ = InventoryModel::visible(&d.scope, &groups, "compute-node");
    }
});
