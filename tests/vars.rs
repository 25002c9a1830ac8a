//! Variable-level inventory dependencies: a layer's digest depends on the
//! inventory variables its play uses (closed over their definitions), not on
//! whole inventory files. Real files and real fingerprints; a few real builds.

mod common;

use std::collections::BTreeMap;

use common::{Edit, TestWs, require_buildah};

fn changed(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Applies `edit` to `file`, returns the labels whose digest changed, restores the file.
fn effect(ws: &TestWs, file: &str, edit: impl Fn(&str) -> String) -> Vec<String> {
    let before_text = ws.read(file);
    let before = ws.digests();
    ws.write(file, &edit(&before_text));
    let after = ws.digests();
    ws.write(file, &before_text);
    changed(&before, &after)
}

const ALL_VARS: &str = "inventory/test/group_vars/all.yml";

/// The chain fixture with a compute template and some extra inventory variables.
fn chain_with_vars() -> TestWs {
    let ws = TestWs::new("chain");
    ws.write(
        "compute-config/roles/common/templates/motd.j2",
        "Welcome to {{ motd_site }}\n",
    );
    ws.append(
        ALL_VARS,
        "motd_site: \"{{ site_name }} cluster\"\nsite_name: alpha\nunused_var: 1\n",
    );
    ws.write(
        "inventory/test/group_vars/UAN.yml",
        "slurm_partitions: [uan-only]\n",
    );
    ws
}

#[test]
fn a_variable_used_only_by_slurm_changes_only_slurm() {
    let ws = chain_with_vars();
    let c = effect(&ws, ALL_VARS, |s| {
        s.edit("  - debug\n", "  - debug\n  - gpu\n")
    });
    assert_eq!(c, vec!["//compute/slurm"]);
}

#[test]
fn a_variable_used_by_compute_in_a_template_or_through_another_variable_changes_compute_and_slurm()
{
    let ws = chain_with_vars();
    // Used only inside a template of compute's role.
    let c = effect(&ws, ALL_VARS, |s| {
        s.edit(
            "motd_site: \"{{ site_name }} cluster\"",
            "motd_site: \"{{ site_name }} system\"",
        )
    });
    assert_eq!(c, vec!["//compute/compute", "//compute/slurm"]);
    // Used only through motd_site's definition.
    let c = effect(&ws, ALL_VARS, |s| {
        s.edit("site_name: alpha", "site_name: beta")
    });
    assert_eq!(c, vec!["//compute/compute", "//compute/slurm"]);
}

#[test]
fn a_variable_no_layer_uses_changes_nothing() {
    let ws = chain_with_vars();
    assert!(effect(&ws, ALL_VARS, |s| s.edit("unused_var: 1", "unused_var: 2")).is_empty());
    assert!(effect(&ws, ALL_VARS, |s| format!("{s}brand_new_var: x\n")).is_empty());
    // A used name, but in a group the container is not in.
    assert!(
        effect(&ws, "inventory/test/group_vars/UAN.yml", |_| {
            "slurm_partitions: [changed]\n".into()
        })
        .is_empty()
    );
    // Comments and formatting do not count.
    assert!(effect(&ws, ALL_VARS, |s| format!("# a comment\n{s}")).is_empty());
}

#[test]
fn group_hierarchy_and_ansible_variables_count() {
    let ws = chain_with_vars();
    // Compute is a child of hpc: hpc's variables reach the container.
    ws.write(
        "inventory/test/hosts",
        "[Compute]\n[UAN]\n[hpc:children]\nCompute\n",
    );
    ws.write(
        "inventory/test/group_vars/hpc.yml",
        "slurm_partitions: [from-hpc]\n",
    );
    let c = effect(&ws, "inventory/test/group_vars/hpc.yml", |_| {
        "slurm_partitions: [changed]\n".into()
    });
    assert_eq!(c, vec!["//compute/slurm"]);
    // ansible_* variables are read by Ansible itself: they always count.
    let c = effect(&ws, ALL_VARS, |s| {
        format!("{s}ansible_python_interpreter: /usr/bin/python3\n")
    });
    assert_eq!(c, vec!["//compute/compute", "//compute/slurm"]);
}

#[test]
fn real_world_role_shapes() {
    let ws = TestWs::new("chain");
    ws.write(
        "slurm-config/slurm.yml",
        "- hosts: Compute\n  gather_facts: false\n  roles:\n    - slurm\n    - shapes\n",
    );
    let r = "slurm-config/roles/shapes";
    ws.write(
        &format!("{r}/tasks/main.yml"),
        r#"- name: "install {{ v_name_string }}"
  raw: echo hi
- include_tasks: nested.yml
- name: grouped
  block:
    - raw: echo "{{ v_block }}"
  rescue:
    - raw: echo "{{ v_rescue }}"
- raw: echo "{{ item }} {{ v_in_loop }}"
  loop: "{{ v_loop_list }}"
- raw: echo "{{ pkg.name }}"
  with_items: v_bare_with
  loop_control:
    loop_var: pkg
- raw: echo "{{ v_filter | default('x') | upper }}"
  when: v_when is defined and v_when | bool
  changed_when: v_changed_when is version('1.0', '>=')
- raw: "{%- if v_ws -%} yes {%- endif %}"
- raw: "{% raw %}{{ v_raw }}{% endraw %}"
  notify: restart thing
"#,
    );
    ws.write(
        &format!("{r}/tasks/nested.yml"),
        "- raw: echo \"{{ v_nested }}\"\n",
    );
    ws.write(
        &format!("{r}/handlers/main.yml"),
        "- name: restart thing\n  raw: echo \"{{ v_handler }}\"\n",
    );
    ws.write(
        &format!("{r}/meta/main.yml"),
        "dependencies:\n  - role: dep\n    dep_port: \"{{ v_meta_param }}\"\n",
    );
    ws.write(
        "slurm-config/roles/dep/tasks/main.yml",
        "- raw: echo \"{{ dep_port }}\"\n",
    );
    ws.write(
        &format!("{r}/defaults/main.yml"),
        "shapes_conf: \"{{ v_default_ref }}\"\n",
    );
    ws.write(
        &format!("{r}/templates/t.conf.j2"),
        "{# comment {{ v_comment }} #}\n{{- v_template -}}\n",
    );
    let vars = [
        "v_name_string",
        "v_block",
        "v_rescue",
        "v_in_loop",
        "v_loop_list",
        "v_bare_with",
        "v_filter",
        "v_when",
        "v_changed_when",
        "v_ws",
        "v_nested",
        "v_handler",
        "v_meta_param",
        "v_default_ref",
        "v_template",
    ];
    let mut inv = String::from(
        "slurm_partitions: [batch]\nitem: not-a-dependency\npkg: nor-this\nv_raw: nor-this\nv_comment: nor-this\n",
    );
    for v in vars {
        inv.push_str(&format!("{v}: one\n"));
    }
    ws.write(ALL_VARS, &inv);
    let h = ws.lb(&["hash", "//compute/slurm", "--json"]).ok().json();
    assert_eq!(
        h["inputs"]["notes"],
        serde_json::json!([]),
        "the analysis gave up"
    );
    for v in vars {
        let c = effect(&ws, ALL_VARS, |s| {
            s.edit(&format!("{v}: one"), &format!("{v}: two"))
        });
        assert_eq!(c, vec!["//compute/slurm"], "{v} is used but did not count");
    }
    for (v, from) in [
        ("item", "item: not-a-dependency"),
        ("pkg", "pkg: nor-this"),
        ("v_raw", "v_raw: nor-this"),
        ("v_comment", "v_comment: nor-this"),
    ] {
        let c = effect(&ws, ALL_VARS, |s| s.edit(from, &format!("{v}: changed")));
        assert!(c.is_empty(), "{v} is not a dependency but counted");
    }
}

#[test]
fn malformed_yaml_in_a_role_is_an_error_and_unparseable_jinja_falls_back() {
    let ws = TestWs::new("chain");
    ws.write(
        "slurm-config/roles/slurm/defaults/main.yml",
        "slurm_port: 6817\nbad: [unclosed\n",
    );
    let r = ws.lb(&["hash", "//compute/slurm"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("slurm-config/roles/slurm/defaults/main.yml:"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("YAML syntax error") && r.stderr.contains("hint:"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"));

    ws.write(
        "slurm-config/roles/slurm/defaults/main.yml",
        "slurm_port: 6817\n",
    );
    ws.write(
        "slurm-config/roles/slurm/templates/odd.j2",
        // Unbalanced: the token scan declines it, and the parser cannot
        // parse it either.
        "line one\n{{ x ) }}\n",
    );
    let h = ws.lb(&["hash", "//compute/slurm", "--json"]).ok().json();
    let notes = h["inputs"]["notes"].to_string();
    assert!(notes.contains("all inventory variables count because slurm-config/roles/slurm/templates/odd.j2:2: Jinja the analysis cannot parse"), "{notes}");
    // ...and so every visible variable counts.
    let ws2 = &ws;
    let c = effect(ws2, ALL_VARS, |s| format!("{s}anything: 1\n"));
    assert_eq!(c, vec!["//compute/slurm"]);
}

#[test]
fn hostvars_makes_every_variable_count_and_why_names_the_line() {
    require_buildah();
    let ws = chain_with_vars();
    ws.lb(&["build", "//compute/slurm"]).ok();
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- name: peek at another host\n  raw: echo '{{ hostvars[inventory_hostname].get(\"x\", \"\") }}'\n  args:\n    executable: /bin/sh\n",
    );
    let why = ws.lb(&["why", "//compute/slurm"]).ok().stdout;
    assert!(
        why.contains("all inventory variables now count because slurm-config/roles/slurm/tasks/main.yml:6: uses hostvars"),
        "{why}"
    );
    assert!(
        why.contains(
            "note: all inventory variables count because slurm-config/roles/slurm/tasks/main.yml:6"
        ),
        "{why}"
    );
    assert!(
        !why.contains("unused_var added"),
        "fallback listed every variable:\n{why}"
    );
    // Now even an unused variable counts for slurm, and only for slurm.
    let c = effect(&ws, ALL_VARS, |s| s.edit("unused_var: 1", "unused_var: 2"));
    assert_eq!(c, vec!["//compute/slurm"]);
}

#[test]
fn two_systems_share_layers_that_use_none_of_their_differences() {
    require_buildah();
    let ws = TestWs::new("chain");
    // //base/hsn runs a play that uses hsn_mtu; //compute/compute uses ntp_server.
    ws.write(
        "hsn-config/hsn.yml",
        "- hosts: HSN\n  gather_facts: false\n  roles: [hsn]\n",
    );
    ws.write(
        "hsn-config/roles/hsn/tasks/main.yml",
        "- raw: echo 'mtu {{ hsn_mtu }}' > /etc/hsn.conf\n  args:\n    executable: /bin/sh\n",
    );
    ws.append(
        "compute-config/roles/common/tasks/main.yml",
        "- raw: echo '{{ ntp_server }}' > /etc/ntp-server\n  args:\n    executable: /bin/sh\n",
    );
    for (sys, ntp) in [("a", "ntp.a.example"), ("b", "ntp.b.example")] {
        ws.write(
            &format!("inventory/{sys}/hosts"),
            "[HSN]\n[Compute]\n[UAN]\n",
        );
        ws.write(
            &format!("inventory/{sys}/group_vars/all.yml"),
            &format!("hsn_mtu: 9000\nntp_server: {ntp}\nslurm_partitions: [batch]\n"),
        );
    }
    let lf = ws
        .read("Layerfile.toml")
        .edit(
            "[systems.test]\ninventory = \"inventory/test\"\nvars = { cluster_name = \"testcluster\" }",
            "[systems.a]\ninventory = \"inventory/a\"\nvars = { cluster_name = \"clusterA\" }\n\n[systems.b]\ninventory = \"inventory/b\"\nvars = { cluster_name = \"clusterB\" }",
        )
        .edit(
            "[layers.\"base/hsn\"]\nparent = \"//base/os\"\n",
            "[layers.\"base/hsn\"]\nparent = \"//base/os\"\nsource = \"hsn-config\"\nplaybook = \"hsn.yml\"\ngroups = [\"HSN\"]\n",
        );
    ws.write("Layerfile.toml", &lf);

    let hash = |sys: &str, label: &str| {
        ws.lb(&["hash", "--system", sys, label]).ok().stdout[..64].to_string()
    };
    assert_eq!(hash("a", "//base/hsn"), hash("b", "//base/hsn"));
    assert_ne!(
        hash("a", "//compute/compute"),
        hash("b", "//compute/compute")
    );

    let a = ws
        .lb(&["build", "--json", "--system", "a", "//compute/compute"])
        .ok()
        .json();
    assert_eq!(TestWs::labels_with(&a, "built").len(), 3);
    let b = ws
        .lb(&["build", "--json", "--system", "b", "//compute/compute"])
        .ok()
        .json();
    assert_eq!(
        TestWs::labels_with(&b, "up_to_date"),
        vec!["//base/os", "//base/hsn"],
        "one build serves both systems"
    );
    assert_eq!(TestWs::labels_with(&b, "built"), vec!["//compute/compute"]);
    let image = b["layers"][2]["image_name"].as_str().unwrap();
    let out = TestWs::run_in_image(image, "cat /etc/ntp-server /etc/hsn.conf /etc/cluster-name");
    assert_eq!(out, "ntp.b.example\nmtu 9000\nclusterB\n");
    // Without --system, the error lists them.
    let r = ws.lb(&["hash", "//base/hsn"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("a, b"), "{}", r.stderr);
}

#[test]
fn an_inventory_host_named_like_the_container_brings_its_groups_and_vars() {
    let ws = chain_with_vars();
    // Ansible merges this host with the working container of //compute/slurm.
    ws.write(
        "inventory/test/hosts",
        "[Compute]\n[UAN]\n[special]\ncompute-slurm slurm_partitions='[\"inline\"]'\n",
    );
    ws.write(
        "inventory/test/group_vars/special.yml",
        "slurm_partitions: [special]\n",
    );
    let c = effect(&ws, "inventory/test/group_vars/special.yml", |_| {
        "slurm_partitions: [changed]\n".into()
    });
    assert_eq!(c, vec!["//compute/slurm"]);
    let c = effect(&ws, "inventory/test/hosts", |s| s.edit("inline", "other"));
    assert_eq!(c, vec!["//compute/slurm"]);
}

#[test]
fn a_template_rendered_from_files_counts_its_variables() {
    let ws = chain_with_vars();
    // `template:` can render any file; one under files/ with Jinja counts too.
    ws.write(
        "slurm-config/roles/slurm/files/gres.conf",
        "NodeName={{ gres_nodes }}\n",
    );
    ws.append(ALL_VARS, "gres_nodes: node[01-04]\n");
    let c = effect(&ws, ALL_VARS, |s| s.edit("node[01-04]", "node[01-08]"));
    assert_eq!(c, vec!["//compute/slurm"]);
}

/// A template whose expression nests deeper than the parse follows
/// (100,000 attribute lookups, 50,000 filters, 100,000 unary minus): no
/// stack overflow. The token scan reads it (no recursion): only `a`
/// counts. When the scan declines it too (here: a non-ASCII name, which it does not
/// read in a tag), every inventory variable counts for the layer, and
/// `why` says so with the file and line.
#[test]
fn a_template_nested_too_deeply_counts_every_variable_without_overflowing() {
    let shapes = [
        format!("{{{{ a{} }}}}", ".a".repeat(100_000)),
        format!("{{{{ a{} }}}}", "|lower".repeat(50_000)),
        format!("{{{{ {}a }}}}", "-".repeat(100_000)),
    ];
    for deep in &shapes {
        let ws = chain_with_vars();
        ws.write(
            "slurm-config/roles/slurm/templates/deep.j2",
            &format!("{deep}\n"),
        );
        let c = effect(&ws, ALL_VARS, |s| s.edit("unused_var: 1", "unused_var: 2"));
        assert!(c.is_empty(), "{c:?}");
        let c = effect(&ws, ALL_VARS, |s| format!("{s}a: 1\n"));
        assert_eq!(c, vec!["//compute/slurm"]);
    }
    for deep in shapes.map(|d| format!("{d}{{{{ é }}}}\n")) {
        let ws = chain_with_vars();
        ws.write("slurm-config/roles/slurm/templates/deep.j2", &deep);
        // unused_var is used by no play: it counts only through the fallback.
        let c = effect(&ws, ALL_VARS, |s| s.edit("unused_var: 1", "unused_var: 2"));
        assert_eq!(c, vec!["//compute/slurm"]);
        let why = ws.lb(&["why", "//compute/slurm"]);
        assert_eq!(why.code, 0, "{}", why.stderr);
        assert!(
            why.stdout.contains(
                "slurm-config/roles/slurm/templates/deep.j2:1: a Jinja expression nested too deeply"
            ),
            "{}",
            why.stdout
        );
    }
}
