//! Freshness of each layer against the cache: fresh (an image would be
//! reused) or dirty, with the reason as data. `build --dry-run` and `why`
//! both come from here, and `build` decides by the same test (a cache row
//! for the digest whose image is in storage), so a plan is what a build does.
//!
//! I/O: SQLite reads through [`Cache`]; no processes.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::cache::{BuildRow, Cache};
use crate::digest::Digest;
use crate::error::Result;
use crate::explain::{self, Change, Lookup, Side};
use crate::fingerprint::Fingerprint;
use crate::label::Label;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Freshness {
    /// The cache holds this digest and its image exists (`up_to_date`, the
    /// word of [`crate::status::LayerState`]).
    #[serde(rename = "up_to_date")]
    Fresh {
        image_name: String,
        image_id: String,
        built_at: i64,
    },
    /// `needs_build`, whatever the reason (`never_built` among them).
    #[serde(rename = "needs_build")]
    Dirty { reason: DirtyReason },
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DirtyReason {
    /// No successful build of this label (for this system) is recorded.
    NeverBuilt,
    /// Inputs differ from the last successful build.
    Changed {
        last_digest: Digest,
        last_built_at: i64,
        changes: Vec<Change>,
    },
    /// The last build was recorded in a format this version cannot read.
    Unreadable {
        last_digest: Digest,
        last_built_at: i64,
    },
}

impl Freshness {
    pub fn is_fresh(&self) -> bool {
        matches!(self, Freshness::Fresh { .. })
    }

    /// The layer's state in the words every command uses.
    pub fn state(&self) -> crate::status::LayerState {
        use crate::status::LayerState;
        match self {
            Freshness::Fresh { .. } => LayerState::UpToDate,
            Freshness::Dirty {
                reason: DirtyReason::NeverBuilt,
            } => LayerState::NeverBuilt,
            Freshness::Dirty { .. } => LayerState::NeedsBuild,
        }
    }

    /// One line: the first thing `why` would say.
    pub fn one_line(&self, label: &str) -> String {
        match self {
            Freshness::Fresh { image_name, .. } => format!("reuses {image_name}"),
            Freshness::Dirty { reason } => match reason {
                DirtyReason::NeverBuilt => "no build of it is recorded".into(),
                DirtyReason::Changed { changes, .. } => explain::one_line(changes, label),
                DirtyReason::Unreadable { .. } => {
                    "the last build was recorded by another layerbuild format".into()
                }
            },
        }
    }
}

/// Resolves digests to recorded inputs: current fingerprints first, then the
/// build history. Holds the fingerprints by reference: a side is copied
/// only when an explanation walks to it.
pub struct HistoryLookup<'a> {
    pub cache: Option<&'a Cache>,
    pub known: BTreeMap<&'a Digest, &'a Fingerprint>,
}

impl<'a> HistoryLookup<'a> {
    pub fn new(cache: Option<&'a Cache>, prints: &'a BTreeMap<Label, Fingerprint>) -> Self {
        HistoryLookup {
            cache,
            known: prints.values().map(|f| (&f.digest, f)).collect(),
        }
    }
}

pub fn side_of(row: &BuildRow) -> Option<Side> {
    row.manifest().map(|manifest| Side {
        manifest,
        vars: row.vars(),
        inventory: row.inventory.clone(),
        system_vars: None,
    })
}

impl Lookup for HistoryLookup<'_> {
    fn side(&self, digest: &Digest) -> Option<Side> {
        if let Some(f) = self.known.get(digest) {
            return Some(Side::from(*f));
        }
        let row = self.cache?.build_with_digest(digest).ok()??;
        side_of(&row)
    }
}

/// The one test of freshness that plan, build and dry run share: is the
/// image of a cache row in storage? `images` is the set of image ids there
/// (`None` when it could not be listed: then the database is trusted).
pub fn in_storage(row: &crate::cache::CachedLayer, images: Option<&HashSet<String>>) -> bool {
    images.is_none_or(|i| i.contains(&row.image_id))
}

/// The cache row of `digest` when it is fresh ([`in_storage`]).
pub fn fresh_row(
    cache: &Cache,
    images: Option<&HashSet<String>>,
    digest: &Digest,
) -> Result<Option<crate::cache::CachedLayer>> {
    Ok(cache.lookup(digest)?.filter(|row| in_storage(row, images)))
}

/// Freshness of one layer. `images` is the set of image ids in storage
/// (`None` when it could not be listed: then the database is trusted).
pub fn freshness(
    cache: Option<&Cache>,
    images: Option<&HashSet<String>>,
    fp: &Fingerprint,
    system: Option<&str>,
    lookup: &dyn Lookup,
    show_values: bool,
) -> Result<Freshness> {
    let Some(cache) = cache else {
        return Ok(Freshness::Dirty {
            reason: DirtyReason::NeverBuilt,
        });
    };
    if let Some(row) = fresh_row(cache, images, &fp.digest)? {
        return Ok(Freshness::Fresh {
            image_name: row.image_name,
            image_id: row.image_id,
            built_at: row.built_at,
        });
    }
    let label = fp.label.to_string();
    let Some(last) = cache.last_build(&label, system, Some(crate::status::RecordStatus::Built))?
    else {
        return Ok(Freshness::Dirty {
            reason: DirtyReason::NeverBuilt,
        });
    };
    if last.digest == fp.digest {
        let image = cache
            .lookup(&fp.digest)?
            .map(|r| r.image_name)
            .unwrap_or_else(|| last.image_id.clone().unwrap_or_default());
        return Ok(Freshness::Dirty {
            reason: DirtyReason::Changed {
                last_digest: last.digest,
                last_built_at: last.started_at,
                changes: vec![Change::ImageMissing { image }],
            },
        });
    }
    let Some(old) = side_of(&last) else {
        return Ok(Freshness::Dirty {
            reason: DirtyReason::Unreadable {
                last_digest: last.digest,
                last_built_at: last.started_at,
            },
        });
    };
    let new = Side::from(fp);
    let mut changes = explain::diff(&old, &new, lookup, show_values);
    if changes.is_empty() {
        // Digests differ but no difference could be named: say so rather than nothing.
        changes.push(Change::DefinitionChanged {
            key: "manifest".into(),
            old: last.digest.as_str().into(),
            new: fp.digest.as_str().into(),
        });
    }
    Ok(Freshness::Dirty {
        reason: DirtyReason::Changed {
            last_digest: last.digest,
            last_built_at: last.started_at,
            changes,
        },
    })
}
