//! An image's identity as container storage knows it: its id, the
//! `layerbuild.digest` and `layerbuild.label` labels every build commits
//! with, and its creation time. Used to adopt images committed by a build
//! that died before recording them, and by `cache verify` and
//! `cache rebuild-index`.
//!
//! I/O: none; reads the JSON `buildah inspect` prints (the backend runs it).

use serde::Serialize;

use crate::digest::Digest;

/// What `buildah inspect --type image` says about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageMeta {
    pub id: String,
    /// The `layerbuild.digest` label.
    pub digest: Option<Digest>,
    /// The `layerbuild.label` label.
    pub label: Option<String>,
    /// Creation time (Unix seconds), when readable.
    pub created: Option<i64>,
    /// The architecture, in OCI's vocabulary (`amd64`, `arm64`), when it says.
    pub arch: Option<String>,
}

/// Reads `buildah inspect --type image` JSON.
pub fn parse_inspect(json: &str) -> std::result::Result<ImageMeta, String> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("unexpected buildah inspect output: {e}"))?;
    let id = v["FromImageID"].as_str().unwrap_or("");
    if id.is_empty() {
        return Err("buildah inspect printed no image id".into());
    }
    let labels = &v["OCIv1"]["config"]["Labels"];
    let label = |k: &str| labels[k].as_str().map(str::to_string);
    Ok(ImageMeta {
        id: id.strip_prefix("sha256:").unwrap_or(id).to_string(),
        digest: label("layerbuild.digest").map(Digest::from),
        label: label("layerbuild.label"),
        created: v["OCIv1"]["created"].as_str().and_then(parse_rfc3339),
        arch: v["OCIv1"]["architecture"]
            .as_str()
            .filter(|a| !a.is_empty())
            .map(str::to_string),
    })
}

/// `2026-11-23T17:02:56.148623162Z` (or with `+hh:mm`) as Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let time_end = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (time, zone) = rest.split_at(time_end);
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':');
    let (hh, mm, ss): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    let offset = match zone {
        "" | "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (oh, om) = z[1..].split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_id_labels_and_creation_time() {
        let json = r#"{"Type":"buildah 0.0.1","FromImage":"localhost/layerbuild/w/base/hsn:9e61d9e97c18",
            "FromImageID":"9c6b8e5cf5f8029085c034214133e3238a286a2793ace6abbfa381fe15fd2d85",
            "OCIv1":{"created":"2026-11-23T17:02:56.148623162Z","config":{"Labels":{
              "io.buildah.version":"1.28.2",
              "layerbuild.digest":"9e61d9e97c189835a6cc7277af468660abd9c37ada7d27b5115a2c5ad854b6f9",
              "layerbuild.label":"//base/hsn"}}}}"#;
        let m = parse_inspect(json).unwrap();
        assert_eq!(
            m.id,
            "9c6b8e5cf5f8029085c034214133e3238a286a2793ace6abbfa381fe15fd2d85"
        );
        assert_eq!(m.label.as_deref(), Some("//base/hsn"));
        assert_eq!(m.digest.unwrap().short(), "9e61d9e97c18");
        assert_eq!(m.created, Some(1_795_453_376));
        // Pulled base images have no layerbuild labels.
        let bare = r#"{"FromImageID":"abc","OCIv1":{"config":{}}}"#;
        let m = parse_inspect(bare).unwrap();
        assert_eq!((m.digest, m.label, m.created), (None, None, None));
        assert!(parse_inspect("{}").is_err());
        assert!(parse_inspect("not json").is_err());
    }

    #[test]
    fn parses_utc_and_offset_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-18T11:06:40Z"), Some(1_795_000_000));
        assert_eq!(
            parse_rfc3339("2026-11-18T13:06:40+02:00"),
            Some(1_795_000_000)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00.5-01:00"),
            Some(951_786_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
