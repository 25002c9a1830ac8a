//! The statuses layerbuild reports, in one vocabulary: every command's
//! report carries one of these enums, never a free string. Each serialises
//! (for `--json`) as a snake_case word (`up_to_date`) and is shown to
//! people as the same words with spaces (`up to date`, [`LayerState::words`]).
//!
//! One enum per concept: a layer's state against the cache
//! ([`LayerState`]: `ls`, `graph --status`, `build --dry-run`, `why`), what
//! a build did with a layer ([`LayerStatus`]), and the smaller ones below.
//! Pure data; no I/O.

use serde::Serialize;

/// Declares a status enum with its snake_case word, `as_str` and `Display`.
macro_rules! status {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vm])* $v),+
        }

        impl $name {
            /// The word shown to people and written in `--json`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),+
                }
            }

            /// The word as people read it in text: `up to date`.
            pub fn words(self) -> String {
                self.as_str().replace('_', " ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status! {
    /// What `build` did with one layer.
    LayerStatus {
        /// Built here, from a clean container.
        Built => "built",
        /// Taken from the shared registry.
        Pulled => "pulled",
        /// An image of this digest was already in the local cache.
        UpToDate => "up_to_date",
        Failed => "failed",
        /// A layer it depends on did not build.
        Skipped => "skipped",
        /// An earlier failure stopped the run before it started.
        NotStarted => "not_started",
    }
}

status! {
    /// A layer's state against the cache, for one system: what `ls`,
    /// `graph --status`, `build --dry-run` and `why` say of it.
    LayerState {
        /// Its digest's cache row exists and the row's image is in
        /// storage: a build would reuse it.
        UpToDate => "up_to_date",
        /// Built before; its inputs changed since, or its image is gone.
        NeedsBuild => "needs_build",
        /// No build of it (for this system) is recorded.
        NeverBuilt => "never_built",
        /// Not up to date, and the last build, at the current digest,
        /// failed (`ls` and `graph --status`, which read the history).
        Failed => "failed",
    }
}

impl LayerState {
    /// Every state, in the order legends list them.
    pub const ALL: [LayerState; 4] = [
        LayerState::UpToDate,
        LayerState::NeedsBuild,
        LayerState::Failed,
        LayerState::NeverBuilt,
    ];
}

status! {
    /// The outcome of re-running steps (`build --from-failed`).
    RunStatus {
        Succeeded => "succeeded",
        Failed => "failed",
    }
}

status! {
    /// What `why` says of a layer: its [`LayerState`] (the same words), or
    /// with `--since REV` how it compares with that revision.
    WhyStatus {
        /// A build would reuse an image.
        UpToDate => "up_to_date",
        NeedsBuild => "needs_build",
        NeverBuilt => "never_built",
        /// `--since REV`: the digest is the one at REV (`--release`: the
        /// one the release holds).
        UnchangedSince => "unchanged_since",
        ChangedSince => "changed_since",
    }
}

status! {
    /// What became of one declared output (export or push).
    OutputStatus {
        Written => "written",
        Pushed => "pushed",
        /// The destination already holds this digest.
        UpToDate => "up_to_date",
        Failed => "failed",
    }
}

status! {
    /// What `promote` did with a release tag.
    PromoteStatus {
        /// The tag now names the layer's image.
        Promoted => "promoted",
        /// It already did: nothing moved, nothing recorded.
        UpToDate => "up_to_date",
        /// `--dry-run`: it would be promoted.
        WouldPromote => "would_promote",
    }
}

status! {
    /// What `gc` did (or would do) with one image.
    GcImageStatus {
        WouldRemove => "would_remove",
        Removed => "removed",
        /// The name is gone; the image stays while images built on it exist.
        Untagged => "untagged",
        /// Already gone.
        Absent => "absent",
        Skipped => "skipped",
        Failed => "failed",
    }
}

status! {
    /// What `cache rebuild-index` did with one image.
    IndexStatus {
        /// A row was written.
        Recorded => "recorded",
        /// The row was there.
        Present => "present",
        Skipped => "skipped",
    }
}

status! {
    /// How an attempt recorded in the build history ended (`builds.status`).
    RecordStatus {
        Built => "built",
        Failed => "failed",
    }
}

status! {
    /// Where a recorded image came from (`builds.source`).
    RecordSource {
        /// Built here.
        Built => "built",
        /// Pulled from the shared registry.
        Pulled => "pulled",
        /// Found in storage with its digest's name and labels, unrecorded.
        Adopted => "adopted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_prints_and_serialises_as_the_same_word() {
        for s in [LayerStatus::NotStarted, LayerStatus::Built] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(LayerState::NeedsBuild.as_str(), "needs_build");
        assert_eq!(LayerState::NeedsBuild.words(), "needs build");
        assert_eq!(LayerStatus::UpToDate.words(), "up to date");
    }

    #[test]
    fn why_and_build_say_a_state_in_the_words_ls_uses() {
        for (why, state) in [
            (WhyStatus::UpToDate, LayerState::UpToDate),
            (WhyStatus::NeedsBuild, LayerState::NeedsBuild),
            (WhyStatus::NeverBuilt, LayerState::NeverBuilt),
        ] {
            assert_eq!(why.as_str(), state.as_str());
        }
        assert_eq!(
            LayerStatus::UpToDate.as_str(),
            LayerState::UpToDate.as_str()
        );
        assert_eq!(LayerStatus::Failed.as_str(), LayerState::Failed.as_str());
    }
}

status! {
    /// What `publish` did with one by-digest object.
    ObjectStatus {
        /// Uploaded, then read back and its sha256 checked.
        Uploaded => "uploaded",
        /// The bucket already held it (same sha256 and size): skipped.
        Present => "present",
    }
}

status! {
    /// What `publish` did with a release.
    PublishStatus {
        /// The release now points at the layer's digest.
        Published => "published",
        /// It already did, every object in place: nothing written.
        UpToDate => "up_to_date",
    }
}
