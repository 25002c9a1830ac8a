//! The raw, serde-level shape of `Layerfile.toml` and its include fragments.
//! Every table denies unknown keys so a typo is an error, not a silent no-op.
//! Spans are kept so validation errors can name the line. No I/O.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLayerfile {
    #[serde(default)]
    pub workspace: RawWorkspace,
    #[serde(default)]
    pub build: RawBuild,
    #[serde(default)]
    pub systems: BTreeMap<Spanned<String>, RawSystem>,
    #[serde(default)]
    pub layers: BTreeMap<Spanned<String>, RawLayer>,
}

/// A file named by `workspace.include`: layers and systems only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFragment {
    #[serde(default)]
    pub systems: BTreeMap<Spanned<String>, RawSystem>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuild {
    pub isolation: Option<Spanned<String>>,
    pub jobs: Option<Spanned<i64>>,
    pub package_command: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSystem {
    pub inventory: Option<Spanned<String>>,
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
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
}
