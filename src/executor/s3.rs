//! [`AwsCli`]: the real [`ObjectStore`], the `aws` command line (Debian's
//! `awscli`). It reads credentials the standard way (the `AWS_*`
//! environment, `~/.aws/config` and `~/.aws/credentials`, profiles, SSO,
//! instance roles); layerbuild never passes, stores or prints them, and
//! redacts the secret ones from anything the tool says. Command lines are
//! built here as data ([`AwsCli::args`]); [`super::cli`] runs them.
//!
//! I/O: runs `aws` (through [`super::cli`]).

use std::path::Path;
use std::process::Command;

use sha2::Digest as _;

use super::{ObjectInfo, ObjectStore, ToolError, ToolErrorKind, ToolResult, cli};
use crate::workspace::S3Settings;

/// Environment variables whose values must never appear in output.
const SECRET_VARS: [&str; 2] = ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// The `aws` command line on one bucket.
pub struct AwsCli {
    pub program: String,
    pub settings: S3Settings,
}

impl AwsCli {
    pub fn new(settings: &S3Settings) -> AwsCli {
        AwsCli {
            program: "aws".into(),
            settings: settings.clone(),
        }
    }

    /// `aws` with the endpoint and region of the settings before `args`.
    pub fn args(&self, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if let Some(e) = &self.settings.endpoint {
            v.push("--endpoint-url".into());
            v.push(e.clone());
        }
        if let Some(r) = &self.settings.region {
            v.push("--region".into());
            v.push(r.clone());
        }
        v
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = cli::command(&self.program, None);
        c.args(self.args(args));
        // No pager (aws v2), no prompts.
        c.env("AWS_PAGER", "");
        c
    }

    fn s3_url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.settings.bucket)
    }

    /// Runs `args`, returning stdout; a failure as a [`ToolError`] with the
    /// secret values redacted.
    fn run(&self, operation: &str, args: &[&str]) -> ToolResult<Vec<u8>> {
        let out = cli::output(&mut self.command(args))
            .map_err(|e| ToolError::missing(&self.program, operation, "awscli", &e))?;
        if !out.status.success() {
            let stderr = redact(&String::from_utf8_lossy(&out.stderr));
            return Err(failure(&self.program, operation, &stderr));
        }
        Ok(out.stdout)
    }
}

/// The text with the values of the secret AWS variables replaced.
pub fn redact(text: &str) -> String {
    let mut s = text.to_string();
    for v in SECRET_VARS {
        if let Ok(value) = std::env::var(v)
            && value.len() >= 4
        {
            s = s.replace(&value, crate::secrets::REDACTED);
        }
    }
    s
}

fn failure(program: &str, operation: &str, stderr: &str) -> ToolError {
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    ToolError::failed(
        program,
        operation,
        stderr,
        format!("aws {operation} failed: {last}"),
    )
}

/// Does `aws s3api head-object`'s stderr say there is no such object?
fn is_not_found(stderr: &str) -> bool {
    stderr.contains("Not Found") || stderr.contains("(404)") || stderr.contains("NoSuchKey")
}

fn bad_output(program: &str, operation: &str, e: impl std::fmt::Display) -> ToolError {
    ToolError::new(
        ToolErrorKind::BadOutput,
        program,
        operation,
        format!("aws {operation}: unreadable output: {e}"),
    )
}

/// The fields of `head-object`'s JSON that matter.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Head {
    content_length: u64,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

impl ObjectStore for AwsCli {
    fn head(&self, key: &str) -> ToolResult<Option<ObjectInfo>> {
        let bucket = self.settings.bucket.as_str();
        let args = [
            "s3api",
            "head-object",
            "--bucket",
            bucket,
            "--key",
            key,
            "--output",
            "json",
        ];
        let out = cli::output(&mut self.command(&args))
            .map_err(|e| ToolError::missing(&self.program, "head-object", "awscli", &e))?;
        if !out.status.success() {
            let stderr = redact(&String::from_utf8_lossy(&out.stderr));
            if is_not_found(&stderr) {
                return Ok(None);
            }
            return Err(failure(&self.program, "head-object", &stderr));
        }
        let h: Head = serde_json::from_slice(&out.stdout)
            .map_err(|e| bad_output(&self.program, "head-object", e))?;
        Ok(Some(ObjectInfo {
            size: h.content_length,
            sha256: h.metadata.get("sha256").cloned(),
        }))
    }

    fn put_file(&self, key: &str, path: &Path, sha256: &str, content_type: &str) -> ToolResult<()> {
        let from = path.to_string_lossy();
        let to = self.s3_url(key);
        let meta = format!("sha256={sha256}");
        // `s3 cp` uploads in parts above its multipart threshold (8 MiB
        // by default, `s3.multipart_threshold` in ~/.aws/config).
        self.run(
            "cp",
            &[
                "s3",
                "cp",
                &from,
                &to,
                "--metadata",
                &meta,
                "--content-type",
                content_type,
                "--only-show-errors",
                "--no-progress",
            ],
        )?;
        Ok(())
    }

    fn read_sha256(&self, key: &str) -> ToolResult<(String, u64)> {
        let from = self.s3_url(key);
        let mut h = sha2::Sha256::new();
        let mut n = 0u64;
        let mut cmd = self.command(&["s3", "cp", &from, "-", "--only-show-errors"]);
        let (status, stderr) = cli::read_stdout(&mut cmd, &mut |chunk| {
            h.update(chunk);
            n += chunk.len() as u64;
        })
        .map_err(|e| ToolError::missing(&self.program, "cp", "awscli", &e))?;
        if !status.success() {
            return Err(failure(&self.program, "cp", &redact(&stderr)));
        }
        let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok((hex, n))
    }

    fn get(&self, key: &str) -> ToolResult<Option<Vec<u8>>> {
        if self.head(key)?.is_none() {
            return Ok(None);
        }
        let from = self.s3_url(key);
        self.run("cp", &["s3", "cp", &from, "-", "--only-show-errors"])
            .map(Some)
    }

    fn list(&self, prefix: &str) -> ToolResult<Vec<String>> {
        let bucket = self.settings.bucket.as_str();
        let out = self.run(
            "list-objects-v2",
            &[
                "s3api",
                "list-objects-v2",
                "--bucket",
                bucket,
                "--prefix",
                prefix,
                "--output",
                "json",
            ],
        )?;
        if out.iter().all(u8::is_ascii_whitespace) {
            return Ok(vec![]);
        }
        let v: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| bad_output(&self.program, "list-objects-v2", e))?;
        let mut keys: Vec<String> = v["Contents"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o["Key"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        Ok(keys)
    }

    fn url(&self, key: &str) -> String {
        self.s3_url(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_and_region_follow_the_operation() {
        let aws = AwsCli::new(&S3Settings {
            endpoint: Some("http://127.0.0.1:9000".into()),
            bucket: "b".into(),
            prefix: "p".into(),
            region: Some("eu-west-1".into()),
        });
        assert_eq!(
            aws.args(&["s3api", "head-object"]).join(" "),
            "s3api head-object --endpoint-url http://127.0.0.1:9000 --region eu-west-1"
        );
    }

    #[test]
    fn a_missing_object_is_told_from_a_failure() {
        assert!(is_not_found(
            "An error occurred (404) when calling the HeadObject operation: Not Found"
        ));
        assert!(!is_not_found(
            "An error occurred (403) when calling the HeadObject operation: Forbidden"
        ));
    }
}
