//! End to end on a real Debian base: mmdebstrap with python3, a package from
//! apt, and a playbook using Ansible modules (file, template, copy,
//! lineinfile) through the buildah connection.

mod common;

use common::{TestWs, require_buildah};

#[test]
fn debian_base_with_python_and_real_ansible_modules() {
    require_buildah();
    let ws = TestWs::new("debian");
    let run = ws.lb(&["build", "--json", "//compute/compute"]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let r = run.json();
    assert_eq!(TestWs::labels_with(&r, "built").len(), 2);
    let image = r["layers"][1]["image_name"].as_str().unwrap().to_string();
    let out = TestWs::run_in_image(
        &image,
        "cat /etc/chrony/chrony.conf /etc/banner /etc/motd; command -v less; python3 -c 'print(\"py ok\")'",
    );
    assert!(out.contains("# e2e: managed by layerbuild"), "{out}");
    assert!(out.contains("server ntp2.example.org iburst"), "{out}");
    assert!(out.contains("makestep 1.0 3"), "{out}");
    assert!(out.contains("compute node image"), "{out}");
    assert!(out.contains("Welcome to e2e"), "{out}");
    assert!(out.contains("/usr/bin/less"), "{out}");
    assert!(out.contains("py ok"), "{out}");

    // An inventory change rebuilds the play layer, not the base.
    ws.write(
        "inventory/test/group_vars/all.yml",
        "ntp_servers:\n  - ntp3.example.org\n",
    );
    let r = ws.lb(&["build", "--json", "//compute/compute"]).ok().json();
    assert_eq!(TestWs::labels_with(&r, "built"), vec!["//compute/compute"]);
    let image = r["layers"][1]["image_name"].as_str().unwrap().to_string();
    let out = TestWs::run_in_image(&image, "cat /etc/chrony/chrony.conf");
    assert!(
        out.contains("server ntp3.example.org") && !out.contains("ntp1"),
        "{out}"
    );
}
