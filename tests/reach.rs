//! Reachability: a layer's inputs from its `source` are the files its play
//! can read, not the whole source. Every rule is tested twice: a change
//! Ansible acts on changes the digest of the layer that reads it
//! (soundness), and an unrelated change right beside it does not
//! (precision). Plays that read host files outside the workspace are
//! rejected. Fingerprints only: no buildah needed.
//!
//! The workspace is the single-repo example of the CUG 2023 talk
//! (`tests/fixtures/talk`): one `site/` repo (`base_packages`, `inventory/`,
//! `layer1.yaml`, `layer2.yaml`, `roles/`) shared by `//compute/layer1` and
//! its child `//compute/layer2`, on a busybox base.

mod common;

use std::collections::BTreeMap;

use common::{Edit, TestWs};

const BASE: &str = "//compute/base";
const L1: &str = "//compute/layer1";
const L2: &str = "//compute/layer2";

fn talk() -> TestWs {
    TestWs::new("talk")
}

/// Labels whose digest differs between two snapshots.
fn changed(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The labels whose digest `edit` changes.
fn effect(ws: &TestWs, edit: impl FnOnce(&TestWs)) -> Vec<String> {
    let before = ws.digests();
    edit(ws);
    changed(&before, &ws.digests())
}

/// Only layer2 (nothing has layer2 as parent).
fn only_l2() -> Vec<String> {
    vec![L2.to_string()]
}

/// Layer1 and its child layer2.
fn l1_and_l2() -> Vec<String> {
    vec![L1.to_string(), L2.to_string()]
}

const NOTHING: Vec<String> = Vec::new();

/// Appends tasks (YAML list items, indented for a play) to layer2's play.
fn layer2_tasks(ws: &TestWs, tasks: &str) {
    ws.append("site/layer2.yaml", &format!("  tasks:\n{tasks}"));
}

/// `hash LABEL --json`: the manifest's notes.
fn notes(ws: &TestWs, label: &str) -> Vec<String> {
    let j = ws.lb(&["hash", label, "--json"]).ok().json();
    j["inputs"]["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// The files of a layer's manifest.
fn files(ws: &TestWs, label: &str) -> Vec<String> {
    let j = ws.lb(&["hash", label, "--json"]).ok().json();
    j["inputs"]["files"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// Line number (1-based) of the first line of `file` holding `needle`.
fn line_of(ws: &TestWs, file: &str, needle: &str) -> usize {
    ws.read(file)
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {file}"))
        + 1
}

// ---------------------------------------------------------------------------
// The talk's single-repo example
// ---------------------------------------------------------------------------

#[test]
fn talk_the_shared_repo_gives_three_layers_and_each_reads_only_its_play() {
    let ws = talk();
    let d = ws.digests();
    assert_eq!(d.keys().collect::<Vec<_>>(), vec![BASE, L1, L2]);
    let l1 = files(&ws, L1);
    assert!(l1.contains(&"site/layer1.yaml".to_string()), "{l1:?}");
    assert!(l1.contains(&"site/roles/nfs/templates/fstab.j2".to_string()));
    for f in ["site/layer2.yaml", "site/roles/slurm/tasks/main.yml"] {
        assert!(
            !l1.contains(&f.to_string()),
            "{f} counts for layer1: {l1:?}"
        );
    }
    let l2 = files(&ws, L2);
    for f in ["site/layer1.yaml", "site/roles/nfs/tasks/main.yml"] {
        assert!(
            !l2.contains(&f.to_string()),
            "{f} counts for layer2: {l2:?}"
        );
    }
    assert!(notes(&ws, L1).is_empty() && notes(&ws, L2).is_empty());
}

#[test]
fn talk_editing_layer2_yaml_changes_only_layer2() {
    let ws = talk();
    let c = effect(&ws, |ws| {
        ws.append(
            "site/layer2.yaml",
            "  tasks:\n    - ansible.builtin.raw: \"true\"\n",
        )
    });
    assert_eq!(c, only_l2());
}

#[test]
fn talk_editing_role_nfs_changes_layer1_and_layer2_not_the_base() {
    let ws = talk();
    let c = effect(&ws, |ws| {
        ws.write(
            "site/roles/nfs/templates/fstab.j2",
            "{% for m in nfs_mounts %}\n{{ nfs_server }}:{{ m }} {{ m }} nfs ro 0 0\n{% endfor %}\n",
        )
    });
    assert_eq!(c, l1_and_l2());
    let c = effect(&ws, |ws| {
        ws.append("site/roles/nfs/defaults/main.yml", "  - /scratch\n")
    });
    assert_eq!(c, l1_and_l2());
}

#[test]
fn talk_editing_role_slurm_changes_only_layer2() {
    let ws = talk();
    let c = effect(&ws, |ws| {
        ws.append(
            "site/roles/slurm/templates/slurm.conf.j2",
            "SlurmdDebug=info\n",
        )
    });
    assert_eq!(c, only_l2());
}

#[test]
fn talk_a_new_unused_playbook_changes_nothing() {
    let ws = talk();
    let c = effect(&ws, |ws| {
        ws.write(
            "site/layer3.yaml",
            "- name: Layer 3, login nodes\n  hosts: login\n  gather_facts: false\n  roles:\n    - common\n    - slurm\n",
        )
    });
    assert_eq!(c, NOTHING);
}

#[test]
fn talk_a_new_role_nobody_uses_changes_nothing() {
    let ws = talk();
    let c = effect(&ws, |ws| {
        ws.write(
            "site/roles/ldap/tasks/main.yml",
            "- ansible.builtin.template:\n    src: sssd.conf.j2\n    dest: /etc/sssd/sssd.conf\n",
        );
        ws.write("site/roles/ldap/templates/sssd.conf.j2", "[sssd]\n");
    });
    assert_eq!(c, NOTHING);
}

#[test]
fn talk_base_packages_change_every_layer_and_the_inventory_counts_by_variable() {
    let ws = talk();
    let c = effect(&ws, |ws| ws.append("site/base_packages", "vim\n"));
    assert_eq!(c, vec![BASE, L1, L2]);
    // slurm_controller is used by layer2's role only.
    let c = effect(&ws, |ws| {
        let t = ws.read("site/inventory/group_vars/all.yml");
        ws.write(
            "site/inventory/group_vars/all.yml",
            &t.edit("slurm_controller: slurmctld", "slurm_controller: ctl2"),
        )
    });
    assert_eq!(c, only_l2());
}

// ---------------------------------------------------------------------------
// The playbook and its import_playbook chain
// ---------------------------------------------------------------------------

/// layer2.yaml imports plays/scheduler.yaml, which imports plays/checks.yaml;
/// plays/login.yaml lies beside them, imported by nobody.
fn with_imports() -> TestWs {
    let ws = talk();
    ws.write(
        "site/layer2.yaml",
        "- import_playbook: plays/scheduler.yaml\n",
    );
    ws.write(
        "site/plays/scheduler.yaml",
        "- hosts: compute\n  gather_facts: false\n  roles:\n    - slurm\n- import_playbook: checks.yaml\n",
    );
    ws.write(
        "site/plays/checks.yaml",
        "- hosts: compute\n  gather_facts: false\n  tasks:\n    - ansible.builtin.raw: \"true\"\n",
    );
    ws.write(
        "site/plays/login.yaml",
        "- hosts: login\n  gather_facts: false\n  roles:\n    - common\n",
    );
    ws
}

#[test]
fn import_playbook_soundness_every_playbook_of_the_chain_counts() {
    let ws = with_imports();
    let c = effect(&ws, |ws| {
        ws.append("site/plays/scheduler.yaml", "# tuned\n")
    });
    assert_eq!(c, only_l2());
    let c = effect(&ws, |ws| {
        ws.append(
            "site/plays/checks.yaml",
            "    - ansible.builtin.raw: \"echo again\"\n",
        )
    });
    assert_eq!(c, only_l2());
}

#[test]
fn import_playbook_precision_a_playbook_beside_the_chain_does_not_count() {
    let ws = with_imports();
    let c = effect(&ws, |ws| {
        ws.append("site/plays/login.yaml", "    - slurm\n")
    });
    assert_eq!(c, NOTHING);
}

// ---------------------------------------------------------------------------
// vars_files
// ---------------------------------------------------------------------------

fn with_vars_files() -> TestWs {
    let ws = talk();
    ws.append("site/layer1.yaml", "  vars_files:\n    - vars/nfs.yml\n");
    ws.write("site/vars/nfs.yml", "nfs_mounts: [/home]\n");
    ws.write("site/vars/slurm.yml", "slurm_partitions: [batch]\n");
    ws
}

#[test]
fn vars_files_soundness_the_named_file_counts() {
    let ws = with_vars_files();
    let c = effect(&ws, |ws| {
        ws.write("site/vars/nfs.yml", "nfs_mounts: [/home, /scratch]\n")
    });
    assert_eq!(c, l1_and_l2());
}

#[test]
fn vars_files_precision_another_file_of_the_vars_directory_does_not_count() {
    let ws = with_vars_files();
    let c = effect(&ws, |ws| {
        ws.write("site/vars/slurm.yml", "slurm_partitions: [batch, debug]\n")
    });
    assert_eq!(c, NOTHING);
}

// ---------------------------------------------------------------------------
// include_vars with a literal name
// ---------------------------------------------------------------------------

/// `include_vars: extra.yml` is found in the playbook directory's `vars/`
/// (Ansible's `_find_needle('vars', ...)`); `include_vars: vars/more.yml`
/// by its path.
fn with_include_vars() -> TestWs {
    let ws = talk();
    layer2_tasks(
        &ws,
        "    - ansible.builtin.include_vars: extra.yml\n    - ansible.builtin.include_vars:\n        file: vars/more.yml\n",
    );
    ws.write("site/vars/extra.yml", "slurm_extra: 1\n");
    ws.write("site/vars/more.yml", "slurm_more: 1\n");
    ws.write("site/vars/unrelated.yml", "other: 1\n");
    ws
}

#[test]
fn include_vars_soundness_a_literal_name_counts_found_in_vars_or_by_path() {
    let ws = with_include_vars();
    let c = effect(&ws, |ws| {
        ws.write("site/vars/extra.yml", "slurm_extra: 2\n")
    });
    assert_eq!(
        c,
        only_l2(),
        "include_vars: extra.yml reads site/vars/extra.yml"
    );
    let c = effect(&ws, |ws| ws.write("site/vars/more.yml", "slurm_more: 2\n"));
    assert_eq!(c, only_l2());
}

#[test]
fn include_vars_precision_another_file_of_the_vars_directory_does_not_count() {
    let ws = with_include_vars();
    let c = effect(&ws, |ws| ws.write("site/vars/unrelated.yml", "other: 2\n"));
    assert_eq!(c, NOTHING);
}

// ---------------------------------------------------------------------------
// group_vars/ and host_vars/ beside the playbook
// ---------------------------------------------------------------------------

/// Playbook-adjacent group_vars and host_vars: nfs_server (used by layer1's
/// nfs role), slurm_controller (used by layer2's slurm role), and variables
/// no play uses. The layers' hosts are compute-layer1 and compute-layer2,
/// in group compute (not login).
fn with_play_vars() -> TestWs {
    let ws = talk();
    ws.write(
        "site/group_vars/all.yml",
        "nfs_server: 10.0.0.2\nunused_var: 1\n",
    );
    ws.write("site/group_vars/compute.yml", "slurm_controller: ctl-a\n");
    ws.write("site/group_vars/login.yml", "slurm_controller: ctl-login\n");
    ws.write(
        "site/host_vars/compute-layer2.yml",
        "slurm_controller: ctl-host\n",
    );
    ws.write(
        "site/host_vars/compute-layer1.yml",
        "slurm_controller: ctl-other-host\n",
    );
    ws
}

#[test]
fn play_group_vars_soundness_a_used_variable_counts_for_the_layers_that_use_it() {
    let ws = with_play_vars();
    let c = effect(&ws, |ws| {
        ws.write(
            "site/group_vars/all.yml",
            "nfs_server: 10.0.0.3\nunused_var: 1\n",
        )
    });
    assert_eq!(c, l1_and_l2());
    let c = effect(&ws, |ws| {
        ws.write("site/group_vars/compute.yml", "slurm_controller: ctl-b\n")
    });
    assert_eq!(c, only_l2());
}

#[test]
fn play_host_vars_soundness_the_layers_own_host_counts() {
    let ws = with_play_vars();
    let c = effect(&ws, |ws| {
        ws.write(
            "site/host_vars/compute-layer2.yml",
            "slurm_controller: ctl-host2\n",
        )
    });
    assert_eq!(c, only_l2());
}

#[test]
fn play_group_vars_precision_an_unused_variable_does_not_count() {
    let ws = with_play_vars();
    let c = effect(&ws, |ws| {
        ws.write(
            "site/group_vars/all.yml",
            "nfs_server: 10.0.0.2\nunused_var: 2\nbrand_new: x\n",
        )
    });
    assert_eq!(c, NOTHING);
}

#[test]
fn play_group_vars_precision_a_group_or_host_the_layer_is_not_does_not_count() {
    let ws = with_play_vars();
    // slurm_controller is used by layer2, but login is not its group.
    let c = effect(&ws, |ws| {
        ws.write(
            "site/group_vars/login.yml",
            "slurm_controller: ctl-login2\n",
        )
    });
    assert_eq!(c, NOTHING);
    // Nor is compute-layer1 its host (and layer1 does not use it).
    let c = effect(&ws, |ws| {
        ws.write(
            "site/host_vars/compute-layer1.yml",
            "slurm_controller: ctl-other-host2\n",
        )
    });
    assert_eq!(c, NOTHING);
}

// ---------------------------------------------------------------------------
// ansible.cfg in the source directory, and what it points to
// ---------------------------------------------------------------------------

fn with_ansible_cfg() -> TestWs {
    let ws = talk();
    ws.write(
        "site/ansible.cfg",
        "[defaults]\nlibrary = ./site_modules\nforks = 5\n",
    );
    ws.write("site/site_modules/hello.py", "# a module\n");
    ws.write("site/old_modules/hello.py", "# an old module\n");
    ws.write("site/ansible.cfg.example", "[defaults]\nforks = 50\n");
    ws
}

#[test]
fn ansible_cfg_soundness_the_file_and_the_directories_it_names_count() {
    let ws = with_ansible_cfg();
    let c = effect(&ws, |ws| ws.append("site/ansible.cfg", "timeout = 30\n"));
    assert_eq!(c, l1_and_l2());
    let c = effect(&ws, |ws| {
        ws.append("site/site_modules/hello.py", "# changed\n")
    });
    assert_eq!(c, l1_and_l2());
    let c = effect(&ws, |ws| {
        ws.write("site/site_modules/new_module.py", "# new\n")
    });
    assert_eq!(c, l1_and_l2());
}

#[test]
fn ansible_cfg_precision_files_beside_it_and_a_directory_it_does_not_name_do_not_count() {
    let ws = with_ansible_cfg();
    let c = effect(&ws, |ws| {
        ws.append("site/old_modules/hello.py", "# changed\n");
        ws.append("site/ansible.cfg.example", "timeout = 30\n");
    });
    assert_eq!(c, NOTHING);
    // ansible-playbook runs in the source directory: an ansible.cfg at the
    // workspace root is not read.
    let c = effect(&ws, |ws| {
        ws.write("ansible.cfg", "[defaults]\nforks = 10\n")
    });
    assert_eq!(c, NOTHING);
}

// ---------------------------------------------------------------------------
// library/, module_utils/, *_plugins/ and collections/
// ---------------------------------------------------------------------------

#[test]
fn code_dirs_soundness_beside_the_playbook_each_counts_whole() {
    let ws = talk();
    for f in [
        "site/library/site_facts.py",
        "site/module_utils/site_common.py",
        "site/filter_plugins/site_filters.py",
        "site/lookup_plugins/site_lookup.py",
        "site/collections/ansible_collections/site/hpc/plugins/modules/m.py",
    ] {
        ws.write(f, "# v1\n");
        let c = effect(&ws, |ws| ws.write(f, "# v2\n"));
        assert_eq!(c, l1_and_l2(), "{f}");
    }
}

#[test]
fn code_dirs_soundness_inside_a_used_role_each_counts_whole() {
    let ws = talk();
    for (f, want) in [
        ("site/roles/nfs/library/nfs_mount.py", l1_and_l2()),
        ("site/roles/nfs/module_utils/nfs_util.py", l1_and_l2()),
        ("site/roles/slurm/filter_plugins/slurm.py", only_l2()),
    ] {
        ws.write(f, "# v1\n");
        let c = effect(&ws, |ws| ws.write(f, "# v2\n"));
        assert_eq!(c, want, "{f}");
    }
}

#[test]
fn code_dirs_precision_an_unused_role_or_another_directory_does_not_count() {
    let ws = talk();
    ws.write(
        "site/roles/unused/tasks/main.yml",
        "- ansible.builtin.raw: \"true\"\n",
    );
    for f in [
        // Code of a role nobody uses.
        "site/roles/unused/library/m.py",
        "site/roles/unused/filter_plugins/f.py",
        // Not beside the playbook: a subdirectory's library/.
        "site/tools/library/m.py",
        "site/tools/filter_plugins/f.py",
        // Beside the playbook, but not a directory Ansible loads code from.
        "site/docs/library.md",
    ] {
        let c = effect(&ws, |ws| ws.write(f, "# new\n"));
        assert_eq!(c, NOTHING, "{f}");
    }
}

// ---------------------------------------------------------------------------
// Used roles and unused roles
// ---------------------------------------------------------------------------

#[test]
fn roles_soundness_a_used_role_and_its_dependencies_count() {
    let ws = talk();
    ws.write(
        "site/roles/munge/tasks/main.yml",
        "- ansible.builtin.raw: \"true\"\n",
    );
    ws.write(
        "site/roles/slurm/meta/main.yml",
        "dependencies:\n  - role: munge\n",
    );
    let c = effect(&ws, |ws| {
        ws.append("site/roles/common/templates/motd.j2", "Be nice.\n")
    });
    assert_eq!(c, l1_and_l2());
    let c = effect(&ws, |ws| {
        ws.write("site/roles/munge/files/munge.key", "secret\n")
    });
    assert_eq!(c, only_l2());
}

#[test]
fn roles_precision_a_role_nobody_uses_does_not_count() {
    let ws = talk();
    ws.write(
        "site/roles/unused/tasks/main.yml",
        "- ansible.builtin.raw: \"true\"\n",
    );
    let c = effect(&ws, |ws| {
        ws.append(
            "site/roles/unused/tasks/main.yml",
            "- ansible.builtin.raw: \"false\"\n",
        );
        ws.write("site/roles/unused/templates/x.j2", "{{ nfs_server }}\n");
    });
    assert_eq!(c, NOTHING);
}

// ---------------------------------------------------------------------------
// include_tasks / import_tasks
// ---------------------------------------------------------------------------

fn with_task_files() -> TestWs {
    let ws = talk();
    layer2_tasks(
        &ws,
        "    - ansible.builtin.import_tasks: tasks/checks.yml\n    - ansible.builtin.include_tasks:\n        file: tasks/accounting.yml\n",
    );
    ws.write("site/tasks/checks.yml", "- ansible.builtin.raw: \"true\"\n");
    ws.write(
        "site/tasks/accounting.yml",
        "- ansible.builtin.include_tasks: accounting-db.yml\n",
    );
    ws.write(
        "site/tasks/accounting-db.yml",
        "- ansible.builtin.raw: \"true\"\n",
    );
    ws.write("site/tasks/unused.yml", "- ansible.builtin.raw: \"true\"\n");
    ws
}

#[test]
fn task_files_soundness_included_and_imported_files_count() {
    let ws = with_task_files();
    for f in [
        "site/tasks/checks.yml",
        "site/tasks/accounting.yml",
        "site/tasks/accounting-db.yml",
    ] {
        let c = effect(&ws, |ws| ws.append(f, "- ansible.builtin.raw: \"echo\"\n"));
        assert_eq!(c, only_l2(), "{f}");
    }
}

#[test]
fn task_files_precision_a_task_file_nobody_includes_does_not_count() {
    let ws = with_task_files();
    let c = effect(&ws, |ws| {
        ws.append("site/tasks/unused.yml", "- ansible.builtin.raw: \"echo\"\n")
    });
    assert_eq!(c, NOTHING);
}

// ---------------------------------------------------------------------------
// The src of copy, template, script, unarchive and assemble
// ---------------------------------------------------------------------------

/// layer2's play reads, by Ansible's search path: files/motd (copy),
/// templates/cgroup.conf.j2 (template), prolog.sh in the playbook directory
/// (script), files/bundle.tar (unarchive), files/fragments/ (assemble), and
/// the slurm role's files/gres.conf (copy, from the role). Beside each lies
/// a file nothing names.
fn with_module_sources() -> TestWs {
    let ws = talk();
    layer2_tasks(
        &ws,
        concat!(
            "    - ansible.builtin.copy: src=motd dest=/etc/motd\n",
            "    - ansible.builtin.template:\n        src: cgroup.conf.j2\n        dest: /etc/slurm/cgroup.conf\n",
            "    - ansible.builtin.script: prolog.sh\n",
            "    - ansible.builtin.unarchive:\n        src: bundle.tar\n        dest: /opt\n",
            "    - ansible.builtin.assemble:\n        src: fragments\n        dest: /etc/slurm/nodes.conf\n        remote_src: false\n",
        ),
    );
    ws.write("site/files/motd", "hello\n");
    ws.write("site/templates/cgroup.conf.j2", "CgroupPlugin=autodetect\n");
    ws.write("site/prolog.sh", "#!/bin/sh\ntrue\n");
    ws.write("site/files/bundle.tar", "not really a tar\n");
    ws.write("site/files/fragments/00-head", "# nodes\n");
    ws.append(
        "site/roles/slurm/tasks/main.yml",
        "- ansible.builtin.copy:\n    src: gres.conf\n    dest: /etc/slurm/gres.conf\n",
    );
    ws.write("site/roles/slurm/files/gres.conf", "Name=gpu\n");
    // Unrelated files right beside them.
    ws.write("site/files/issue", "unrelated\n");
    ws.write("site/templates/unused.j2", "unrelated\n");
    ws.write("site/epilog.sh", "#!/bin/sh\ntrue\n");
    ws.write("site/files/fragments.old/00-head", "# old nodes\n");
    ws.write(
        "site/roles/unused/tasks/main.yml",
        "- ansible.builtin.raw: \"true\"\n",
    );
    ws.write("site/roles/unused/files/gres.conf", "Name=other\n");
    ws
}

#[test]
fn module_src_soundness_each_module_reads_by_the_search_path() {
    let ws = with_module_sources();
    for f in [
        "site/files/motd",
        "site/templates/cgroup.conf.j2",
        "site/prolog.sh",
        "site/files/bundle.tar",
        "site/files/fragments/00-head",
        "site/roles/slurm/files/gres.conf",
    ] {
        let c = effect(&ws, |ws| ws.append(f, "# changed\n"));
        assert_eq!(c, only_l2(), "{f}");
    }
    // assemble reads the whole directory.
    let c = effect(&ws, |ws| {
        ws.write("site/files/fragments/10-gpu", "NodeName=gpu[1-4]\n")
    });
    assert_eq!(c, only_l2());
}

#[test]
fn module_src_precision_files_beside_what_is_read_do_not_count() {
    let ws = with_module_sources();
    for f in [
        "site/files/issue",
        "site/templates/unused.j2",
        "site/epilog.sh",
        "site/files/fragments.old/00-head",
        "site/roles/unused/files/gres.conf",
    ] {
        let c = effect(&ws, |ws| ws.append(f, "# changed\n"));
        assert_eq!(c, NOTHING, "{f}");
    }
}

#[test]
fn module_src_soundness_a_task_file_or_imported_playbook_outside_the_playbook_directory_searches_its_own_files()
 {
    // Ansible searches the directory of the task's file first: `copy:
    // src=tx` in tasks/t.yml reads tasks/files/tx; in plays/p.yml,
    // plays/files/px (checked with ansible-core 2.14).
    let ws = talk();
    layer2_tasks(&ws, "    - ansible.builtin.include_tasks: tasks/t.yml\n");
    ws.write(
        "site/tasks/t.yml",
        "- ansible.builtin.copy: src=tx dest=/etc/tx\n- ansible.builtin.template: src=tt.j2 dest=/etc/tt\n",
    );
    ws.write("site/tasks/files/tx", "v1\n");
    ws.write("site/tasks/templates/tt.j2", "v1\n");
    ws.append("site/layer2.yaml", "- import_playbook: plays/p.yml\n");
    ws.write(
        "site/plays/p.yml",
        "- hosts: compute\n  gather_facts: false\n  tasks:\n    - ansible.builtin.copy: src=px dest=/etc/px\n",
    );
    ws.write("site/plays/files/px", "v1\n");
    for f in [
        "site/tasks/files/tx",
        "site/tasks/templates/tt.j2",
        "site/plays/files/px",
    ] {
        let c = effect(&ws, |ws| ws.write(f, "v2\n"));
        assert_eq!(c, only_l2(), "{f}");
    }
}

// ---------------------------------------------------------------------------
// lookup('file' | 'template' | 'fileglob' | 'first_found')
// ---------------------------------------------------------------------------

fn with_lookups() -> TestWs {
    let ws = talk();
    layer2_tasks(
        &ws,
        concat!(
            "    - ansible.builtin.debug:\n        msg: \"{{ lookup('file', 'banner.txt') }}\"\n",
            "    - ansible.builtin.debug:\n        msg: \"{{ lookup('template', 'issue.j2') }}\"\n",
            "    - ansible.builtin.debug:\n        msg: \"{{ lookup('fileglob', 'conf.d/*.conf') }}\"\n",
            "    - ansible.builtin.debug:\n        msg: \"{{ lookup('first_found', ['node.yml', 'default.yml']) }}\"\n",
        ),
    );
    ws.write("site/files/banner.txt", "v1\n");
    ws.write("site/templates/issue.j2", "v1\n");
    ws.write("site/files/conf.d/a.conf", "v1\n");
    ws.write("site/files/default.yml", "v1\n");
    ws.write("site/files/other.txt", "v1\n");
    ws.write("site/templates/other.j2", "v1\n");
    ws.write("site/files/other.d/a.conf", "v1\n");
    ws.write("site/files/fallback.yml", "v1\n");
    ws
}

#[test]
fn lookups_soundness_file_template_fileglob_and_first_found_count() {
    let ws = with_lookups();
    for f in [
        "site/files/banner.txt",
        "site/templates/issue.j2",
        "site/files/conf.d/a.conf",
        "site/files/default.yml",
    ] {
        let c = effect(&ws, |ws| ws.write(f, "v2\n"));
        assert_eq!(c, only_l2(), "{f}");
    }
    // A new match of the glob.
    let c = effect(&ws, |ws| ws.write("site/files/conf.d/b.conf", "v1\n"));
    assert_eq!(c, only_l2());
    // An earlier candidate of first_found appears: Ansible reads it instead.
    let c = effect(&ws, |ws| ws.write("site/files/node.yml", "v1\n"));
    assert_eq!(c, only_l2());
}

#[test]
fn lookups_precision_files_beside_what_is_read_do_not_count() {
    let ws = with_lookups();
    for f in [
        "site/files/other.txt",
        "site/templates/other.j2",
        "site/files/other.d/a.conf",
        "site/files/fallback.yml",
    ] {
        let c = effect(&ws, |ws| ws.write(f, "v2\n"));
        assert_eq!(c, NOTHING, "{f}");
    }
}

#[test]
fn lookups_in_a_role_template_soundness_and_precision() {
    let ws = talk();
    ws.append(
        "site/roles/slurm/templates/slurm.conf.j2",
        "{{ lookup('file', 'site-banner.txt') }}\n",
    );
    ws.write("site/files/site-banner.txt", "v1\n");
    ws.write("site/files/other-banner.txt", "v1\n");
    let c = effect(&ws, |ws| ws.write("site/files/site-banner.txt", "v2\n"));
    assert_eq!(c, only_l2());
    let c = effect(&ws, |ws| ws.write("site/files/other-banner.txt", "v2\n"));
    assert_eq!(c, NOTHING);
}

#[test]
fn lookups_in_a_task_file_outside_a_role_search_its_own_files_directory() {
    // `lookup('file', 'motd')` in tasks/l.yml reads tasks/files/motd first
    // (checked with ansible-core 2.14), a name without a dot or a slash.
    let ws = talk();
    layer2_tasks(&ws, "    - ansible.builtin.include_tasks: tasks/l.yml\n");
    ws.write(
        "site/tasks/l.yml",
        "- ansible.builtin.debug:\n    msg: \"{{ lookup('file', 'motd') }}\"\n- ansible.builtin.debug:\n    msg: \"{{ item }}\"\n  with_file: [issue]\n",
    );
    ws.write("site/tasks/files/motd", "v1\n");
    ws.write("site/tasks/files/issue", "v1\n");
    ws.write("site/tasks/files/unrelated", "v1\n");
    for f in ["site/tasks/files/motd", "site/tasks/files/issue"] {
        let c = effect(&ws, |ws| ws.write(f, "v2\n"));
        assert_eq!(c, only_l2(), "{f}");
    }
    let c = effect(&ws, |ws| ws.write("site/tasks/files/unrelated", "v2\n"));
    assert_eq!(c, NOTHING);
}

#[test]
fn lookups_in_a_template_rendered_by_a_task_file_outside_a_role_search_that_files_directory() {
    // tasks/t.yml renders tasks/templates/t.j2, whose lookup('file', 'motd')
    // reads tasks/files/motd (the task's search path).
    let ws = talk();
    layer2_tasks(&ws, "    - ansible.builtin.include_tasks: tasks/t.yml\n");
    ws.write(
        "site/tasks/t.yml",
        "- ansible.builtin.template: src=t.j2 dest=/etc/t\n",
    );
    ws.write(
        "site/tasks/templates/t.j2",
        "{{ lookup('file', 'motd') }}\n",
    );
    ws.write("site/tasks/files/motd", "v1\n");
    let c = effect(&ws, |ws| ws.write("site/tasks/files/motd", "v2\n"));
    assert_eq!(c, only_l2());
}

// ---------------------------------------------------------------------------
// Globs: the directory listing and the matches
// ---------------------------------------------------------------------------

#[test]
fn globs_precision_the_content_of_a_file_the_glob_does_not_match_does_not_count() {
    let ws = with_lookups();
    ws.write("site/files/conf.d/README", "v1\n");
    let c = effect(&ws, |ws| ws.write("site/files/conf.d/README", "v2\n"));
    assert_eq!(c, NOTHING);
}

// ---------------------------------------------------------------------------
// with_fileglob and with_first_found
// ---------------------------------------------------------------------------

fn with_loops() -> TestWs {
    let ws = talk();
    layer2_tasks(
        &ws,
        concat!(
            "    - ansible.builtin.copy:\n        src: \"{{ item }}\"\n        dest: /etc/sysctl.d/\n      with_fileglob: sysctl.d/*.conf\n",
            "    - ansible.builtin.template:\n        src: \"{{ item }}\"\n        dest: /etc/security/limits.conf\n      with_first_found:\n        - limits-compute.conf.j2\n        - limits-default.conf.j2\n",
            "    - ansible.builtin.copy:\n        src: \"{{ f }}\"\n        dest: /etc/profile.d/\n      loop: \"{{ query('fileglob', 'profile.d/*.sh') }}\"\n      loop_control:\n        loop_var: f\n",
        ),
    );
    ws.write("site/files/profile.d/site.sh", "v1\n");
    ws.write("site/files/sysctl.d/10-net.conf", "v1\n");
    ws.write("site/templates/limits-default.conf.j2", "v1\n");
    ws.write("site/files/limits.d/10-x.conf", "v1\n");
    ws.write("site/templates/limits-login.conf.j2", "v1\n");
    ws.write("site/notes.txt", "v1\n");
    ws
}

#[test]
fn loops_soundness_with_fileglob_and_with_first_found_count() {
    let ws = with_loops();
    for f in [
        "site/files/sysctl.d/10-net.conf",
        "site/templates/limits-default.conf.j2",
        "site/files/profile.d/site.sh",
    ] {
        let c = effect(&ws, |ws| ws.write(f, "v2\n"));
        assert_eq!(c, only_l2(), "{f}");
    }
    let c = effect(&ws, |ws| ws.write("site/files/sysctl.d/20-vm.conf", "v1\n"));
    assert_eq!(c, only_l2());
    let c = effect(&ws, |ws| {
        ws.write("site/templates/limits-compute.conf.j2", "v1\n")
    });
    assert_eq!(c, only_l2());
}

#[test]
fn loops_precision_files_beside_what_is_read_do_not_count() {
    let ws = with_loops();
    assert_eq!(
        notes(&ws, L2),
        Vec::<String>::new(),
        "`src: {{{{ item }}}}` of a file loop is bounded by the loop"
    );
    for f in [
        "site/files/limits.d/10-x.conf",
        "site/templates/limits-login.conf.j2",
        "site/notes.txt",
    ] {
        let c = effect(&ws, |ws| ws.write(f, "v2\n"));
        assert_eq!(c, NOTHING, "{f}");
    }
}

#[test]
fn loops_soundness_the_item_of_a_loop_over_anything_else_counts_the_whole_source() {
    // The items are lines of a file: any path at all.
    let ws = talk();
    layer2_tasks(
        &ws,
        "    - ansible.builtin.copy:\n        src: \"{{ item }}\"\n        dest: /etc/\n      loop: \"{{ lookup('file', 'list.txt').splitlines() }}\"\n",
    );
    ws.write("site/files/list.txt", "notes/README\n");
    ws.write("site/notes/README", "v1\n");
    let c = effect(&ws, |ws| ws.write("site/notes/README", "v2\n"));
    assert_eq!(c, only_l2());
}

// ---------------------------------------------------------------------------
// A templated path with a literal directory part
// ---------------------------------------------------------------------------

fn with_templated_dir() -> TestWs {
    let ws = talk();
    layer2_tasks(
        &ws,
        "    - ansible.builtin.template:\n        src: \"configs/{{ cluster_name }}.conf.j2\"\n        dest: /etc/site.conf\n",
    );
    ws.write("site/templates/configs/talk.conf.j2", "v1\n");
    ws.write("site/templates/configs/other.conf.j2", "v1\n");
    ws.write("site/templates/other/talk.conf.j2", "v1\n");
    ws.write("site/templates/talk.conf.j2", "v1\n");
    ws
}

#[test]
fn templated_path_soundness_the_literal_directory_counts() {
    let ws = with_templated_dir();
    for f in [
        "site/templates/configs/talk.conf.j2",
        "site/templates/configs/other.conf.j2",
        "site/templates/configs/new.conf.j2",
    ] {
        let c = effect(&ws, |ws| ws.write(f, "v2\n"));
        assert_eq!(c, only_l2(), "{f}");
    }
    assert!(notes(&ws, L2).is_empty(), "{:?}", notes(&ws, L2));
}

#[test]
fn templated_path_precision_other_directories_do_not_count() {
    let ws = with_templated_dir();
    for f in [
        "site/templates/other/talk.conf.j2",
        "site/templates/talk.conf.j2",
    ] {
        let c = effect(&ws, |ws| ws.write(f, "v2\n"));
        assert_eq!(c, NOTHING, "{f}");
    }
}

// ---------------------------------------------------------------------------
// Unresolvable reads: the whole source counts, for that layer only
// ---------------------------------------------------------------------------

fn with_unresolvable_src() -> TestWs {
    let ws = talk();
    layer2_tasks(
        &ws,
        "    - ansible.builtin.template:\n        src: \"{{ slurm_conf_template }}\"\n        dest: /etc/slurm/slurm.conf\n",
    );
    ws.write("site/notes/README", "v1\n");
    ws
}

#[test]
fn unresolvable_src_soundness_any_file_of_the_source_counts_for_that_layer() {
    let ws = with_unresolvable_src();
    let c = effect(&ws, |ws| ws.write("site/notes/README", "v2\n"));
    assert_eq!(c, only_l2());
    let c = effect(&ws, |ws| ws.write("site/anything.j2", "v1\n"));
    assert_eq!(c, only_l2());
}

#[test]
fn unresolvable_src_soundness_even_a_file_of_a_role_nobody_uses() {
    // src: "{{ slurm_conf_template }}" may be "roles/ldap/templates/x.j2",
    // found relative to the playbook directory.
    let ws = with_unresolvable_src();
    ws.write(
        "site/roles/ldap/tasks/main.yml",
        "- ansible.builtin.raw: \"true\"\n",
    );
    ws.write("site/roles/ldap/templates/x.j2", "v1\n");
    let c = effect(&ws, |ws| ws.write("site/roles/ldap/templates/x.j2", "v2\n"));
    assert_eq!(c, only_l2());
}

#[test]
fn unresolvable_src_precision_another_layer_sharing_the_source_stays_precise() {
    let ws = with_unresolvable_src();
    // layer1 does not read the README: only layer2's digest changes (above),
    // and layer1's manifest has no fallback.
    assert!(notes(&ws, L1).is_empty(), "{:?}", notes(&ws, L1));
    let l1 = files(&ws, L1);
    assert!(!l1.contains(&"site/notes/README".to_string()), "{l1:?}");
    assert!(!l1.contains(&"site/layer2.yaml".to_string()), "{l1:?}");
}

#[test]
fn unresolvable_src_is_recorded_with_file_and_line_in_the_manifest_and_by_why() {
    let ws = with_unresolvable_src();
    let line = line_of(&ws, "site/layer2.yaml", "slurm_conf_template");
    let at = format!("site/layer2.yaml:{line}");
    let n = notes(&ws, L2);
    assert!(
        n.iter()
            .any(|n| n.contains("every file of the workspace counts") && n.contains(&at)),
        "{n:?}"
    );
    let why = ws.lb(&["why", L2]).ok();
    assert!(why.stdout.contains(&at), "{}", why.stdout);
}

fn with_unresolvable_lookup() -> TestWs {
    let ws = talk();
    layer2_tasks(
        &ws,
        "    - ansible.builtin.debug:\n        msg: \"{{ lookup('file', banner_file) }}\"\n",
    );
    ws.write("site/notes/README", "v1\n");
    ws
}

#[test]
fn unresolvable_lookup_soundness_any_file_of_the_source_counts_and_is_noted() {
    let ws = with_unresolvable_lookup();
    let c = effect(&ws, |ws| ws.write("site/notes/README", "v2\n"));
    assert_eq!(c, only_l2());
    let line = line_of(&ws, "site/layer2.yaml", "banner_file");
    let n = notes(&ws, L2);
    assert!(
        n.iter()
            .any(|n| n.contains("every file of the workspace counts")
                && n.contains(&format!("site/layer2.yaml:{line}"))),
        "{n:?}"
    );
}

#[test]
fn unresolvable_lookup_precision_another_layer_sharing_the_source_stays_precise() {
    let ws = with_unresolvable_lookup();
    assert!(notes(&ws, L1).is_empty(), "{:?}", notes(&ws, L1));
    assert!(!files(&ws, L1).contains(&"site/notes/README".to_string()));
}

#[test]
fn unresolvable_lookup_soundness_even_a_file_of_a_role_nobody_uses() {
    let ws = with_unresolvable_lookup();
    ws.write(
        "site/roles/ldap/tasks/main.yml",
        "- ansible.builtin.raw: \"true\"\n",
    );
    ws.write("site/roles/ldap/files/banner", "v1\n");
    // banner_file may be "roles/ldap/files/banner".
    let c = effect(&ws, |ws| ws.write("site/roles/ldap/files/banner", "v2\n"));
    assert_eq!(c, only_l2());
}

// ---------------------------------------------------------------------------
// False cache hits kept closed: host files outside the workspace
// ---------------------------------------------------------------------------

/// `ls` fails naming `file:line` with a hint.
#[track_caller]
fn rejected(ws: &TestWs, file: &str, needle: &str) {
    let out = ws.lb(&["ls"]);
    assert_ne!(out.code, 0, "accepted:\n{}", out.stdout);
    let at = format!("{file}:{}", line_of(ws, file, needle));
    assert!(out.stderr.contains(&at), "no {at} in:\n{}", out.stderr);
    assert!(out.stderr.contains("hint:"), "no hint in:\n{}", out.stderr);
    let h = ws.lb(&["hash", L2]);
    assert_ne!(h.code, 0, "hash accepted it:\n{}", h.stdout);
}

/// A host file outside the workspace (beside the workspace's directory).
fn host_file(ws: &TestWs, name: &str) -> String {
    let p = ws.root.parent().unwrap().join(name);
    std::fs::write(&p, "host content\n").unwrap();
    p.display().to_string()
}

#[test]
fn outside_a_role_template_linked_out_of_the_workspace_read_with_lookup_template() {
    let ws = talk();
    let target = host_file(&ws, "outside.j2");
    std::os::unix::fs::symlink(&target, ws.path("site/roles/slurm/templates/outside.j2")).unwrap();
    ws.append(
        "site/roles/slurm/tasks/main.yml",
        "- ansible.builtin.debug:\n    msg: \"{{ lookup('template', 'outside.j2') }}\"\n",
    );
    rejected(&ws, "site/roles/slurm/tasks/main.yml", "outside.j2");
}

#[test]
fn outside_lookup_file_of_an_absolute_path() {
    let ws = talk();
    let p = host_file(&ws, "motd");
    layer2_tasks(
        &ws,
        &format!(
            "    - ansible.builtin.debug:\n        msg: \"{{{{ lookup('file', '{p}') }}}}\"\n"
        ),
    );
    rejected(&ws, "site/layer2.yaml", "lookup('file'");
}

#[test]
fn outside_copy_src_absolute() {
    let ws = talk();
    let p = host_file(&ws, "hosts");
    layer2_tasks(
        &ws,
        &format!("    - ansible.builtin.copy: src={p} dest=/etc/hosts\n"),
    );
    rejected(&ws, "site/layer2.yaml", "src=/");
}

#[test]
fn outside_template_src_climbing_out_with_dotdot() {
    let ws = talk();
    // From site/roles/slurm/templates, five levels up is the directory
    // holding the workspace.
    host_file(&ws, "x");
    ws.append(
        "site/roles/slurm/tasks/main.yml",
        "- ansible.builtin.template:\n    src: ../../../../../x\n    dest: /etc/x\n",
    );
    rejected(&ws, "site/roles/slurm/tasks/main.yml", "../../../../../x");
}

#[test]
fn outside_script_absolute() {
    let ws = talk();
    let p = host_file(&ws, "prolog.sh");
    layer2_tasks(&ws, &format!("    - ansible.builtin.script: {p}\n"));
    rejected(&ws, "site/layer2.yaml", "script:");
}

#[test]
fn outside_vars_files_and_include_vars_are_rejected_the_same_way() {
    let ws = talk();
    let p = host_file(&ws, "site.yml");
    ws.append("site/layer2.yaml", &format!("  vars_files:\n    - {p}\n"));
    rejected(&ws, "site/layer2.yaml", "site.yml");
    let ws = talk();
    // From site/, two levels up is the directory holding the workspace.
    host_file(&ws, "site.yml");
    layer2_tasks(&ws, "    - ansible.builtin.include_vars: ../../site.yml\n");
    rejected(&ws, "site/layer2.yaml", "../../site.yml");
}

#[test]
fn outside_ansible_cfg_pointing_at_a_host_directory() {
    let ws = talk();
    let modules = ws.root.parent().unwrap().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::write(modules.join("site_facts.py"), "# v1\n").unwrap();
    ws.write(
        "site/ansible.cfg",
        &format!("[defaults]\nlibrary = {}\n", modules.display()),
    );
    rejected(&ws, "site/ansible.cfg", "library");
}

#[test]
fn lookups_precision_pure_lookups_remote_srcs_and_safe_delegation_do_not_count_the_whole_source() {
    let ws = talk();
    layer2_tasks(
        &ws,
        concat!(
            "    - ansible.builtin.debug:\n        msg: \"{{ lookup('env', 'HOME') }} {{ query('items', [1]) }} {{ lookup('dict', {'a': 1}) }} {{ q('sequence', 'start=1 end=2') }}\"\n",
            "    - ansible.builtin.debug:\n        msg: \"{{ item.key }}\"\n      with_dict: {a: 1}\n",
            "    - ansible.builtin.file:\n        src: \"{{ link_target | default('/opt/x') }}\"\n        dest: /opt/y\n        state: link\n",
            "    - ansible.builtin.file: src=/etc/hosts dest=/etc/hosts.link state=link\n",
            "    - ansible.builtin.debug:\n        msg: hello\n      delegate_to: localhost\n",
        ),
    );
    let n = notes(&ws, L2);
    assert!(!n.iter().any(|n| n.starts_with("every file of ")), "{n:?}");
    assert_eq!(
        effect(&ws, |ws| ws.write("site/unrelated.txt", "x\n")),
        NOTHING
    );
}
