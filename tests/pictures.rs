//! `graph --status` in every format and `history`. The statuses come from
//! builds against the recording backend ([`TestWs::recorded`]: no buildah);
//! SVG and HTML are drawn by the real Graphviz `dot`, which these tests
//! need (`scripts/install-deps.sh` installs it): they fail, never skip,
//! without it.

mod common;

use std::collections::BTreeMap;

use common::{TestWs, lb_in};

const EXPECTED: [(&str, &str); 5] = [
    ("//base/os", "up_to_date"),
    ("//base/hsn", "up_to_date"),
    ("//compute/compute", "needs_build"),
    ("//compute/slurm", "never_built"),
    ("//uan/uan", "failed"),
];

fn require_dot() {
    let ok = std::process::Command::new("dot")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test needs Graphviz's dot: apt-get install graphviz (scripts/install-deps.sh)"
    );
}

#[test]
fn graph_status_json_agrees_with_ls_and_names_failures() {
    let ws = TestWs::every_status();
    let g = ws.lb(&["graph", "--status", "--json"]).ok().json();
    assert_eq!(g["version"], 1);
    assert_eq!(g["system"], "test");
    let statuses: BTreeMap<&str, &str> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["label"].as_str().unwrap(), n["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, EXPECTED.into_iter().collect());
    assert_eq!(g["counts"]["up_to_date"], 2);
    assert_eq!(g["counts"]["failed"], 1);
    // Every status is `ls`'s, in the same words, for the same digest.
    let ls = ws.lb(&["ls", "--json"]).ok().json();
    for entry in ls["layers"].as_array().unwrap() {
        let label = entry["label"].as_str().unwrap();
        let node = g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["label"] == label)
            .unwrap();
        assert_eq!(node["digest"], entry["digest"], "{label}");
        assert_eq!(node["status"], entry["status"], "{label}");
    }
    let uan = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["label"] == "//uan/uan")
        .unwrap();
    assert_eq!(uan["last"]["outcome"], "failed");
    assert!(
        uan["last"]["error"]
            .as_str()
            .unwrap()
            .contains("recorded failure of //uan/uan"),
        "{uan}"
    );
    let never = &g["nodes"][3];
    assert_eq!(never["label"], "//compute/slurm");
    assert!(never["last"].is_null(), "{never}");
}

#[test]
fn graph_status_dot_fills_each_layer_with_its_status_colour() {
    let ws = TestWs::every_status();
    let dot = ws.lb(&["graph", "--status", "--format", "dot"]).ok().stdout;
    let legend: BTreeMap<String, String> =
        regex::Regex::new(r#""legend: (\w+)" \[fillcolor="(#[0-9a-f]{6})""#)
            .unwrap()
            .captures_iter(&dot)
            .map(|c| (c[1].to_string(), c[2].to_string()))
            .collect();
    assert_eq!(legend.len(), 4, "a legend entry per status:\n{dot}");
    let colours: std::collections::BTreeSet<&String> = legend.values().collect();
    assert_eq!(colours.len(), 4, "four distinct colours:\n{dot}");
    let short = regex::Regex::new(r"· [0-9a-f]{12}\b").unwrap();
    for (label, status) in EXPECTED {
        let node = regex::Regex::new(&format!(
            r#"(?m)^  "{label}" \[fillcolor="(#[0-9a-f]{{6}})", label="([^"]*)"\];$"#
        ))
        .unwrap();
        let c = node
            .captures(&dot)
            .unwrap_or_else(|| panic!("no node {label}:\n{dot}"));
        assert_eq!(c[1], legend[status], "{label} is {status}:\n{dot}");
        let words = status.replace('_', " ");
        assert!(c[2].contains(&words), "{label}: {}", &c[2]);
        // The short digest, 12 hex digits.
        assert!(short.is_match(&c[2]), "{label}: {}", &c[2]);
    }
    // Built layers show their last build's duration; a never built one none.
    assert!(dot.contains("//uan/uan\\nfailed · "), "{dot}");
    assert!(
        regex::Regex::new(r#"//base/os\\nup to date · [0-9a-f]{12} · \d+\.\ds""#)
            .unwrap()
            .is_match(&dot),
        "{dot}"
    );
    assert!(
        dot.contains(&format!("graph [label=\"{}, system test\"", ws.name)),
        "the system in the graph label:\n{dot}"
    );
    assert!(dot.contains("\"//compute/compute\" -> \"//compute/slurm\";"));
}

#[test]
fn graph_status_mermaid_has_a_class_per_status() {
    let ws = TestWs::every_status();
    let m = ws
        .lb(&["graph", "--status", "--format", "mermaid"])
        .ok()
        .stdout;
    assert!(m.starts_with("flowchart TD\n"), "{m}");
    for status in ["up_to_date", "needs_build", "failed", "never_built"] {
        assert_eq!(
            m.matches(&format!("classDef {status} fill:#")).count(),
            1,
            "{m}"
        );
    }
    for (label, status) in EXPECTED {
        let id = label.trim_start_matches("//").replace('/', "_");
        assert!(
            m.lines()
                .any(|l| l.starts_with(&format!("  {id}[\"{label}<br/>"))
                    && l.ends_with(&format!(":::{status}"))),
            "{label} as {status}:\n{m}"
        );
    }
    assert!(m.contains("  compute_compute --> compute_slurm\n"), "{m}");
}

#[test]
fn graph_status_text_is_a_tree_with_columns_and_patterns_select() {
    let ws = TestWs::every_status();
    let t = ws
        .lb(&["graph", "--status", "--format", "text"])
        .ok()
        .stdout;
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 5, "{t}");
    assert!(lines[0].starts_with("//base/os "), "{t}");
    assert!(lines[0].contains("  up to date  "), "{t}");
    assert!(t.contains("└─ //compute/slurm"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.contains("//uan/uan") && l.contains(" failed ")),
        "{t}"
    );
    assert!(
        t.lines().any(|l| l.contains("//compute/slurm")
            && l.contains("never built")
            && l.ends_with(" -")),
        "{t}"
    );

    // A pattern shows its layers with their ancestors, nothing else.
    let t = ws
        .lb(&["graph", "--status", "--format", "text", "//compute/..."])
        .ok()
        .stdout;
    assert_eq!(t.lines().count(), 4, "{t}");
    assert!(!t.contains("//uan/uan"), "{t}");
    let g = ws.lb(&["graph", "--json", "//uan/uan"]).ok().json();
    let labels: Vec<&str> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["//base/os", "//base/hsn", "//uan/uan"]);
    assert!(
        g.get("system").is_none(),
        "no status fields without --status"
    );
}

#[test]
fn graph_without_status_is_unchanged() {
    let ws = TestWs::recorded("chain");
    let dot = ws.lb(&["graph"]).ok().stdout;
    assert_eq!(
        dot,
        "digraph layers {\n  rankdir=LR;\n  \"//base/os\";\n  \"//base/hsn\";\n  \"//compute/compute\";\n  \
         \"//compute/slurm\";\n  \"//uan/uan\";\n  \"//base/os\" -> \"//base/hsn\";\n  \
         \"//base/hsn\" -> \"//compute/compute\";\n  \"//compute/compute\" -> \"//compute/slurm\";\n  \
         \"//base/hsn\" -> \"//uan/uan\";\n}\n"
    );
    let mermaid = ws.lb(&["graph", "--format", "mermaid"]).ok().stdout;
    assert_eq!(
        mermaid,
        "graph LR\n  base_os[\"//base/os\"]\n  base_hsn[\"//base/hsn\"]\n  \
         compute_compute[\"//compute/compute\"]\n  compute_slurm[\"//compute/slurm\"]\n  \
         uan_uan[\"//uan/uan\"]\n  base_os --> base_hsn\n  base_hsn --> compute_compute\n  \
         compute_compute --> compute_slurm\n  base_hsn --> uan_uan\n"
    );
    let json = ws.lb(&["graph", "--format", "json"]).ok().stdout;
    assert!(
        json.starts_with(
            "{\n  \"version\": 1,\n  \"nodes\": [\n    {\n      \"label\": \"//base/os\",\n      \
             \"parent\": {\n        \"kind\": \"scratch\"\n      },\n      \"children\": [\n        \
             \"//base/hsn\"\n      ]\n    },\n"
        ),
        "{json}"
    );
    assert!(!json.contains("\"status\"") && !json.contains("\"system\""));
}

#[test]
fn graph_svg_is_drawn_by_graphviz_with_a_node_per_layer() {
    require_dot();
    let ws = TestWs::every_status();
    let svg = ws.lb(&["graph", "--status", "--format", "svg"]).ok().stdout;
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&svg, options)
        .unwrap_or_else(|e| panic!("{e}:\n{svg}"));
    let titles: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("node"))
        .filter_map(|g| {
            g.children()
                .find(|c| c.has_tag_name("title"))
                .and_then(|t| t.text())
                .map(str::to_string)
        })
        .collect();
    let layers: Vec<&String> = titles.iter().filter(|t| t.starts_with("//")).collect();
    assert_eq!(layers.len(), 5, "{titles:?}");
    for (label, _) in EXPECTED {
        assert!(titles.iter().any(|t| t == label), "{label} in {titles:?}");
    }
    assert_eq!(
        titles.iter().filter(|t| t.starts_with("legend: ")).count(),
        4
    );
    // Filled with the statuses' colours.
    assert!(svg.contains("fill=\"#f4a3a3\""), "failed's colour");
}

#[test]
fn graph_html_is_one_page_with_the_drawing_and_a_status_table() {
    require_dot();
    let ws = TestWs::every_status();
    let html = ws
        .lb(&["graph", "--status", "--format", "html"])
        .ok()
        .stdout;
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<svg").count(), 1, "the drawing inline");
    assert!(!html.contains("<?xml"), "no XML prologue inside the page");
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "no scripts");
    assert!(!lower.contains("src=\"http"), "nothing fetched");
    assert!(!lower.contains("<link"), "no external style sheets");
    for (label, status) in EXPECTED {
        let row = html
            .lines()
            .find(|l| l.starts_with(&format!("<tr class=\"{status}\"><td>{label}</td>")))
            .unwrap_or_else(|| panic!("no row for {label} as {status}:\n{html}"));
        assert!(row.contains(&status.replace('_', " ")), "{row}");
    }
    let uan = html
        .lines()
        .find(|l| l.contains("<td>//uan/uan</td>"))
        .unwrap();
    assert!(uan.contains("UTC (failed)"), "last built: {uan}");
    for h in ["label", "status", "digest", "last duration", "last built"] {
        assert!(html.contains(&format!("<th>{h}</th>")), "{h}");
    }
}

/// Without Graphviz: `svg` is a tool error (exit 3) saying what to install;
/// `html` still writes its page, with the graph as Mermaid text.
#[test]
fn without_graphviz_svg_says_what_to_install_and_html_falls_back() {
    let ws = TestWs::new("chain");
    let env = [("LAYERBUILD_DOT", "/nonexistent/dot")];
    let r = lb_in(&ws.root, &["graph", "--format", "svg"], &env);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot run /nonexistent/dot"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("apt-get install -y graphviz"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());

    let r = lb_in(&ws.root, &["graph", "--status", "--format", "html"], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("apt-get install graphviz"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("<svg"));
    assert!(
        r.stdout
            .contains("<pre class=\"mermaid-source\">flowchart TD")
    );
    assert!(!r.stdout.to_lowercase().contains("<script"));
    assert!(
        r.stdout
            .contains("<tr class=\"never_built\"><td>//uan/uan</td>"),
        "{}",
        r.stdout
    );
}

#[test]
fn history_lists_builds_newest_first_with_outcomes() {
    let ws = TestWs::every_status();
    let h = ws.lb(&["history", "--json"]).ok().json();
    assert_eq!(h["version"], 1);
    let builds = h["builds"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = builds
        .iter()
        .map(|b| (b["label"].as_str().unwrap(), b["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("//uan/uan", "failed"),
            ("//compute/compute", "built"),
            ("//base/hsn", "built"),
            ("//base/os", "built"),
        ]
    );
    let ids: Vec<i64> = builds.iter().map(|b| b["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let failed = &builds[0];
    assert_eq!(failed["error"], "recorded failure of //uan/uan");
    assert_eq!(failed["system"], "test");
    assert!(
        failed["log_path"].as_str().unwrap().ends_with(".log"),
        "{failed}"
    );
    assert!(builds[1]["error"].is_null());

    // The text: a header, a line per build, the failure's error below it.
    let t = ws.lb(&["history"]).ok().stdout;
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("TIME "), "{t}");
    assert!(
        lines[1].contains("//uan/uan") && lines[1].contains(" failed "),
        "{t}"
    );
    assert!(
        lines[2].trim_start() == "error: recorded failure of //uan/uan",
        "{t}"
    );
    assert!(
        lines[3].contains("//compute/compute") && lines[3].contains(" built "),
        "{t}"
    );
    assert!(
        regex::Regex::new(r" [0-9a-f]{12} ")
            .unwrap()
            .is_match(lines[1]),
        "short digest: {t}"
    );

    // -n: the newest N.
    let h = ws.lb(&["history", "-n", "2", "--json"]).ok().json();
    let labels: Vec<&str> = h["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["//uan/uan", "//compute/compute"]);

    // A pattern: those layers' builds only (not their ancestors').
    let h = ws
        .lb(&["history", "//base/...", "--system", "test", "--json"])
        .ok()
        .json();
    let labels: Vec<&str> = h["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["//base/hsn", "//base/os"]);
}

#[test]
fn history_of_a_workspace_never_built_is_empty() {
    let ws = TestWs::recorded("chain");
    let r = ws.lb(&["history"]).ok();
    assert_eq!(r.stdout, "no builds recorded\n");
    assert!(!ws.db().exists(), "history created the cache");
    let h = ws.lb(&["history", "--json"]).ok().json();
    assert_eq!(h["builds"], serde_json::json!([]));
}

#[test]
fn bad_input_is_refused_clearly() {
    let ws = TestWs::recorded("chain");
    for (args, says) in [
        (
            &["graph", "//compute/nope"][..],
            "//compute/nope matches no layer",
        ),
        (
            &["graph", "--status", "compute"],
            "labels look like //TYPE/LAYER",
        ),
        (&["graph", "--format", "png"], "invalid value 'png'"),
        (
            &["graph", "--status", "--system", "nosuch"],
            "unknown system 'nosuch'",
        ),
        (&["history", "//nope/..."], "//nope/... matches no layer"),
        (
            &["history", "--system", "nosuch"],
            "unknown system 'nosuch'",
        ),
        (&["history", "-n", "many"], "invalid value 'many'"),
    ] {
        let r = ws.lb(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
}
