//! What buildah and skopeo print, read into data: image listings, `rmi`
//! outcomes, registry lookups. Pure functions of the text.
//!
//! I/O: none.

use std::collections::{HashMap, HashSet};

use crate::executor::{ImageInfo, ImageNames, RegistryEntry, RmiOutcome};

/// An image id without its `sha256:` prefix.
pub fn normalize_id(id: &str) -> String {
    id.strip_prefix("sha256:").unwrap_or(id).to_string()
}

/// `buildah images --format '{{.ID}} {{.Name}}:{{.Tag}}'`: every id, and
/// the id each name names.
pub fn images_named(stdout: &str) -> (HashSet<String>, ImageNames) {
    let (mut ids, mut names) = (HashSet::new(), HashMap::new());
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        let Some(id) = words.next() else { continue };
        let id = normalize_id(id);
        if let Some(name) = words.next().filter(|n| *n != "<none>:<none>") {
            names.insert(name.to_string(), id.clone());
        }
        ids.insert(id);
    }
    (ids, names)
}

/// `buildah images --json --no-trunc`.
pub fn image_list(text: &str) -> Result<Vec<ImageInfo>, String> {
    // An empty store prints nothing rather than `[]`.
    if text.trim().is_empty() {
        return Ok(vec![]);
    }
    let v: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| format!("buildah images --json: unexpected output: {e}"))?;
    Ok(v.iter()
        .map(|i| ImageInfo {
            id: normalize_id(i["id"].as_str().unwrap_or("")),
            names: i["names"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            size: parse_size(&i["size"]),
        })
        .collect())
}

/// One trimmed entry per line (`buildah containers --format`).
pub fn lines(stdout: &str) -> HashSet<String> {
    stdout.lines().map(|l| l.trim().to_string()).collect()
}

/// How `buildah rmi NAME` went; `None` for a failure to report.
pub fn rmi_outcome(success: bool, stdout: &str, stderr: &str) -> Option<RmiOutcome> {
    if success {
        // Only "untagged: NAME" when the image stays (other names, or
        // images built on it); its id as well when it was deleted.
        let deleted = stdout.lines().any(|l| !l.starts_with("untagged:"));
        return Some(if deleted {
            RmiOutcome::Removed
        } else {
            RmiOutcome::Untagged
        });
    }
    if stderr.contains("image not known") {
        return Some(RmiOutcome::NotKnown);
    }
    if stderr.contains("in use by a container") {
        return Some(RmiOutcome::InUse);
    }
    None
}

/// Does `buildah inspect` say there is no such image?
pub fn is_unknown_image(stderr: &str) -> bool {
    stderr.contains("image not known") || stderr.contains("not found")
}

/// Does skopeo say the registry has no such tag (as opposed to not answering)?
pub fn is_absent_in_registry(stderr: &str) -> bool {
    stderr.contains("manifest unknown")
        || stderr.contains("name unknown")
        || stderr.contains("not found")
}

/// `skopeo inspect --raw docker://REF`: the (OCI architecture, manifest
/// digest) of each entry of an image index or Docker manifest list;
/// empty for a single image's manifest.
pub fn manifest_list(raw: &str) -> Result<Vec<(String, String)>, String> {
    let v: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("skopeo inspect --raw: {e}"))?;
    let Some(entries) = v["manifests"].as_array() else {
        return Ok(vec![]);
    };
    entries
        .iter()
        .map(|e| {
            let arch = e["platform"]["architecture"].as_str();
            let digest = e["digest"].as_str();
            match (arch, digest) {
                (Some(a), Some(d)) => Ok((a.to_string(), d.to_string())),
                _ => Err(format!(
                    "skopeo inspect --raw: a list entry without platform or digest: {e}"
                )),
            }
        })
        .collect()
}

/// `skopeo inspect docker://REF` of a present tag.
pub fn skopeo_entry(json: &str) -> Result<RegistryEntry, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("skopeo inspect: {e}"))?;
    Ok(RegistryEntry::Present {
        label: v["Labels"]["layerbuild.digest"]
            .as_str()
            .unwrap_or("")
            .into(),
    })
}

/// buildah's image size: bytes, or (buildah 1.28) a decimal human string such
/// as `"2.13 MB"`. Unreadable sizes count as 0.
fn parse_size(v: &serde_json::Value) -> u64 {
    if let Some(n) = v.as_u64() {
        return n;
    }
    let Some(s) = v.as_str() else { return 0 };
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let Ok(n) = s[..split].parse::<f64>() else {
        return 0;
    };
    let mult: f64 = match s[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return 0,
    };
    (n * mult).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_image_sizes_as_bytes_or_human_strings() {
        assert_eq!(parse_size(&json!(2130000)), 2_130_000);
        assert_eq!(parse_size(&json!("2.13 MB")), 2_130_000);
        assert_eq!(parse_size(&json!("512 B")), 512);
        assert_eq!(parse_size(&json!("1.5 kB")), 1500);
        assert_eq!(parse_size(&json!("1 GB")), 1_000_000_000);
        assert_eq!(parse_size(&json!("huge")), 0);
        assert_eq!(parse_size(&json!(null)), 0);
    }

    #[test]
    fn reads_listings_and_rmi_outcomes() {
        let (ids, names) = images_named("sha256:aa localhost/x:1\nbb <none>:<none>\n");
        assert_eq!(ids, HashSet::from(["aa".to_string(), "bb".to_string()]));
        assert_eq!(names.get("localhost/x:1").map(String::as_str), Some("aa"));
        assert_eq!(names.len(), 1);
        assert!(image_list("  \n").unwrap().is_empty());
        let l = image_list(r#"[{"id":"sha256:cc","names":["a:1"],"size":"1 kB"}]"#).unwrap();
        assert_eq!((l[0].id.as_str(), l[0].size), ("cc", 1000));
        assert_eq!(
            rmi_outcome(true, "untagged: a:1\n", ""),
            Some(RmiOutcome::Untagged)
        );
        assert_eq!(
            rmi_outcome(true, "untagged: a:1\ncc\n", ""),
            Some(RmiOutcome::Removed)
        );
        assert_eq!(
            rmi_outcome(false, "", "image not known"),
            Some(RmiOutcome::NotKnown)
        );
        assert_eq!(rmi_outcome(false, "", "disk on fire"), None);
        assert_eq!(
            skopeo_entry(r#"{"Labels":{"layerbuild.digest":"d1"}}"#),
            Ok(RegistryEntry::Present { label: "d1".into() })
        );
    }
}
