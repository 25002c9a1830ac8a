//! The statuses layerbuild reports, in one vocabulary: every command's
//! report carries one of these enums, never a free string, and each
//! serialises (for `--json`) and prints as the same snake_case word.
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
        Cached => "cached",
        Failed => "failed",
        /// A layer it depends on did not build.
        Skipped => "skipped",
        /// An earlier failure stopped the run before it started.
        NotStarted => "not_started",
    }
}

status! {
    /// What `build --dry-run` says of one layer.
    PlanStatus {
        /// An image would be reused.
        Fresh => "fresh",
        /// It would be built.
        Dirty => "dirty",
    }
}

status! {
    /// The outcome of re-running steps (`build --from-failed`).
    RunStatus {
        Succeeded => "succeeded",
        Failed => "failed",
    }
}

status! {
    /// What `why` says of a layer.
    WhyStatus {
        /// A build would reuse an image.
        UpToDate => "up_to_date",
        NeedsRebuild => "needs_rebuild",
        NeverBuilt => "never_built",
        /// `--since REV`: the digest is the one at REV.
        UnchangedSince => "unchanged_since",
        ChangedSince => "changed_since",
    }
}

status! {
    /// What `ls` says of a layer.
    LsStatus {
        /// Its digest's image is in the cache.
        Cached => "cached",
        /// Built before; its inputs changed since, or its image is gone.
        NeedsBuild => "needs_build",
        NeverBuilt => "never_built",
    }
}

status! {
    /// What `graph --status` says of a layer: `ls`'s words, and `failed`.
    NodeStatus {
        /// Its digest's image is in the cache.
        Cached => "cached",
        /// Built before; its inputs changed since, or its image is gone.
        NeedsBuild => "needs_build",
        /// The last build, at the current digest, failed.
        Failed => "failed",
        NeverBuilt => "never_built",
    }
}

impl NodeStatus {
    /// Every status, in the order legends list them.
    pub const ALL: [NodeStatus; 4] = [
        NodeStatus::Cached,
        NodeStatus::NeedsBuild,
        NodeStatus::Failed,
        NodeStatus::NeverBuilt,
    ];
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
        assert_eq!(PlanStatus::Dirty.as_str(), "dirty");
    }
}
