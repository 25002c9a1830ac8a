//! The raw, serde-level shape of `Layerfile.toml` and its include fragments.
//! Every table denies unknown keys so a typo is an error, not a silent no-op.
//! Spans are kept so validation errors can name the line. No I/O.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLayerfile {
    #[serde(default)]
    pub workspace: RawWorkspace,
    #[serde(default)]
    pub build: RawBuild,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub ci: RawCi,
    #[serde(default)]
    pub publish: RawPublish,
    /// Empty once parsed: the workspace takes the `systems` and `layers`
    /// tables out and deserialises them one by one; these fields remain so
    /// that a value which is not a table is a type error.
    #[allow(dead_code)]
    #[serde(default)]
    pub systems: BTreeMap<Spanned<String>, RawSystem>,
    #[allow(dead_code)]
    #[serde(default)]
    pub layers: BTreeMap<Spanned<String>, RawLayer>,
}

/// A file named by `workspace.include`: layers and systems only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFragment {
    /// Empty once parsed: the workspace takes the `systems` and `layers`
    /// tables out and deserialises them one by one; these fields remain so
    /// that a value which is not a table is a type error.
    #[allow(dead_code)]
    #[serde(default)]
    pub systems: BTreeMap<Spanned<String>, RawSystem>,
    #[allow(dead_code)]
    #[serde(default)]
    pub layers: BTreeMap<Spanned<String>, RawLayer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorkspace {
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    pub cache: Option<Spanned<String>>,
    /// Absolute directories outside the workspace that paths and symlinks
    /// may lead into.
    #[serde(default)]
    pub allow_outside: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuild {
    pub isolation: Option<Spanned<String>>,
    pub jobs: Option<Spanned<i64>>,
    pub package_command: Option<Spanned<String>>,
    /// Containers storage (graphroot) for buildah; machine configuration, not an input.
    pub storage_root: Option<String>,
    pub storage_runroot: Option<String>,
    pub storage_driver: Option<String>,
    /// Commit with fixed timestamps (SOURCE_DATE_EPOCH, else 0).
    pub reproducible: Option<bool>,
    /// How plays reach the working container: `mitogen` (default), `chroot` or `buildah`.
    pub ansible_connection: Option<Spanned<String>>,
    /// The CPU architectures every layer is built for (`x86_64`, `aarch64`).
    pub architectures: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    /// `host[:port]/path`: images are pushed as `<registry>/<type>/<layer>:<digest>`.
    pub registry: Option<Spanned<String>>,
    pub tls_verify: Option<bool>,
    pub mode: Option<Spanned<String>>,
}

/// `[publish]`: where `layerbuild publish` uploads netboot releases.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPublish {
    pub s3: Option<RawS3>,
}

/// `[publish.s3]`. No credentials here: they come from the standard AWS
/// environment and files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawS3 {
    pub endpoint: Option<String>,
    pub bucket: Spanned<String>,
    pub prefix: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCi {
    #[serde(default)]
    pub gitlab: RawGitlab,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGitlab {
    pub image: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub before_script: Vec<String>,
    #[serde(default)]
    pub variables: std::collections::BTreeMap<String, String>,
    /// The command jobs run layerbuild with (default "layerbuild").
    pub command: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSystem {
    pub inventory: Option<Spanned<String>>,
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
    /// Variable names whose values are never shown or logged.
    #[serde(default)]
    pub secret_vars: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLayer {
    pub parent: Spanned<String>,
    #[serde(default)]
    pub setup: Vec<String>,
    #[serde(default)]
    pub packages: Vec<String>,
    pub packages_file: Option<Spanned<String>>,
    pub package_command: Option<String>,
    #[serde(default)]
    pub scripts: Vec<Spanned<String>>,
    #[serde(default)]
    pub run: Vec<String>,
    #[serde(default)]
    pub inputs: Vec<Spanned<String>>,
    pub source: Option<Spanned<String>>,
    pub playbook: Option<Spanned<String>>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub roles_path: Vec<Spanned<String>>,
    /// Overrides `[build] ansible_connection` for this layer's play.
    pub ansible_connection: Option<Spanned<String>>,
    /// Commands run in a fresh container from the committed image.
    #[serde(default)]
    pub tests: Vec<String>,
    /// Exports and pushes `build` performs once the layer is built.
    #[serde(default)]
    pub outputs: Vec<Spanned<RawOutput>>,
    /// Commands run in the image booted in a virtual machine.
    #[serde(default)]
    pub boot_tests: Vec<String>,
    /// How the image boots (netboot export, `boot`, boot tests).
    pub boot: Option<Spanned<RawBoot>>,
    /// Restricts the layer to some of the workspace's architectures.
    pub architectures: Option<Spanned<Vec<String>>>,
}

/// `[layers."t/l".boot]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBoot {
    /// The kernel version to boot (`/boot/vmlinuz-VERSION`).
    pub kernel: Option<String>,
    /// Kernel command line arguments added to the ones layerbuild sets.
    pub cmdline: Option<String>,
    pub memory_mib: Option<u32>,
    pub timeout_secs: Option<u64>,
}

/// `[[layers."t/l".outputs]]`: either a file (`format` + `path`) or a push.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutput {
    pub format: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub compression: Option<Spanned<String>>,
    pub push: Option<Spanned<String>>,
    pub tls_verify: Option<bool>,
}
