//! [`Recording`]: an in-memory [`Backend`] for tests, so the logic above the
//! executor (adoption, `cache verify`, gc's choices, registry fallback) runs
//! without root or buildah. A build "commits" an image whose id is derived
//! from its request ([`Recording::image_id`]) and which carries the labels
//! real builds commit with (`layerbuild.digest`, `layerbuild.label`); every
//! call is recorded in order ([`Recording::calls`]); a label can be made to
//! fail and the registry to be unreachable. Tests of building itself use
//! real buildah. Compiled always (integration tests reach it through the
//! library); the command line never uses it.
//!
//! I/O: none, except the build's log (one line, at the request's log
//! path) and [`Exporter::export`], which writes a small placeholder file
//! at the destination (through the same atomic write the real one uses).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Mutex, MutexGuard};

use super::export::{ExportRequest, write_atomically};
use super::inspect::ImageMeta;
use super::{
    AttachedRun, Backend, BuildFailure, BuildOutput, BuildRequest, BuildResult, Executor, Exporter,
    ImageInfo, ImageNames, ImageStore, Registry, RegistryEntry, RmiOutcome, StepSink, TestOutcome,
    TestRequest, ToolError, ToolErrorKind, ToolResult,
};
use crate::digest::Digest;

/// An image as the recording store (or its registry) holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    pub id: String,
    pub names: Vec<String>,
    /// The `layerbuild.digest` label.
    pub digest: Option<Digest>,
    /// The `layerbuild.label` label.
    pub label: Option<String>,
    /// Creation time (Unix seconds).
    pub created: i64,
    pub size: u64,
}

impl StoredImage {
    /// The image a build of `label` at `digest` commits as `name`.
    pub fn built(label: &str, digest: &Digest, name: &str) -> StoredImage {
        StoredImage {
            id: Recording::image_id(label, digest),
            names: vec![name.to_string()],
            digest: Some(digest.clone()),
            label: Some(label.to_string()),
            created: crate::ops::now_secs(),
            size: 1000,
        }
    }
}

/// One call to the backend, in the order it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Preflight {
        needs_play: bool,
    },
    Build {
        label: String,
        digest: Digest,
        image_name: String,
        from: Option<String>,
    },
    RunTests {
        label: String,
        image: String,
    },
    Images,
    ImageList,
    CommittedImage(String),
    RemoveImage(String),
    TagImage(String, String),
    Containers,
    CreateContainer {
        name: String,
        image: String,
    },
    RemoveContainer(String),
    RunAttached {
        container: String,
        argv: Vec<String>,
    },
    Lookup(String),
    Pull(String),
    Push {
        image_id: String,
        reference: String,
    },
    DigestLabel(String),
    HasImage(String),
    Export {
        image_id: String,
        path: String,
    },
    PushTo {
        image_id: String,
        destination: String,
    },
    RemoteDigestLabel(String),
    ManifestDigest(String),
    CopyTag {
        from: String,
        to: String,
    },
}

#[derive(Default)]
struct State {
    /// id -> image.
    images: BTreeMap<String, StoredImage>,
    /// container name -> the image it was made from.
    containers: BTreeMap<String, Option<String>>,
    /// reference -> image.
    registry: BTreeMap<String, StoredImage>,
    registry_unreachable: bool,
    registry_refuses_pushes: bool,
    failing: BTreeSet<String>,
    calls: Vec<Call>,
}

impl State {
    /// The id of the image `name` names (or `name` itself, an id).
    fn resolve(&self, name: &str) -> Option<String> {
        if self.images.contains_key(name) {
            return Some(name.to_string());
        }
        self.images
            .values()
            .find(|i| i.names.iter().any(|n| n == name))
            .map(|i| i.id.clone())
    }

    /// Puts `image` in the store, moving its names off any other image.
    fn add(&mut self, image: StoredImage) {
        for other in self.images.values_mut() {
            other.names.retain(|n| !image.names.contains(n));
        }
        let entry = self
            .images
            .entry(image.id.clone())
            .or_insert_with(|| StoredImage {
                names: vec![],
                ..image.clone()
            });
        for n in image.names {
            if !entry.names.contains(&n) {
                entry.names.push(n);
            }
        }
    }
}

/// The in-memory backend. See the module documentation.
#[derive(Default)]
pub struct Recording {
    state: Mutex<State>,
}

fn failed(tool: &str, operation: &str, stderr: &str) -> ToolError {
    ToolError::failed(
        tool,
        operation,
        stderr,
        format!("{tool} {operation} failed: {stderr}"),
    )
}

fn unreachable(operation: &str) -> ToolError {
    ToolError::new(
        ToolErrorKind::Failed,
        "recording",
        operation,
        "pinging container registry: dial tcp: connect: connection refused",
    )
}

impl Recording {
    pub fn new() -> Recording {
        Recording::default()
    }

    /// This backend as the trait object ops take.
    pub fn backend(&self) -> &dyn Backend {
        self
    }

    /// The id a build of `label` at `digest` commits.
    pub fn image_id(label: &str, digest: &Digest) -> String {
        blake3::hash(format!("{digest}\0{label}").as_bytes())
            .to_hex()
            .to_string()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, call: Call) -> MutexGuard<'_, State> {
        let mut s = self.state();
        s.calls.push(call);
        s
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The labels built so far, in order.
    pub fn built(&self) -> Vec<String> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Build { label, .. } => Some(label.clone()),
                _ => None,
            })
            .collect()
    }

    /// Builds of `label` fail from now on (keeping their container).
    pub fn fail_label(&self, label: &str) {
        self.state().failing.insert(label.to_string());
    }

    /// Every registry operation fails as an unreachable registry does.
    pub fn set_registry_unreachable(&self, unreachable: bool) {
        self.state().registry_unreachable = unreachable;
    }

    /// Pushes fail as a registry without write access refuses them
    /// (lookups and pulls still work).
    pub fn set_registry_refuses_pushes(&self, refuses: bool) {
        self.state().registry_refuses_pushes = refuses;
    }

    /// Puts an image in the store (its names move off other images).
    pub fn add_image(&self, image: StoredImage) {
        self.state().add(image);
    }

    /// Removes an image from the store, whatever names it has.
    pub fn delete_image(&self, id: &str) -> Option<StoredImage> {
        self.state().images.remove(id)
    }

    /// Changes an image's `layerbuild.digest` label.
    pub fn relabel(&self, id: &str, digest: &str) {
        if let Some(i) = self.state().images.get_mut(id) {
            i.digest = Some(digest.into());
        }
    }

    /// The images in the store, by id.
    pub fn images_stored(&self) -> Vec<StoredImage> {
        self.state().images.values().cloned().collect()
    }

    /// A working container, as a build that died would leave it.
    pub fn add_container(&self, name: &str) {
        self.state().containers.insert(name.to_string(), None);
    }

    /// Puts an image in the registry under `reference`.
    pub fn put_in_registry(&self, reference: &str, image: StoredImage) {
        self.state().registry.insert(reference.to_string(), image);
    }

    /// The references the registry holds.
    pub fn registry_references(&self) -> Vec<String> {
        self.state().registry.keys().cloned().collect()
    }

    /// The manifest digest of the registry's copy of the image `id`.
    pub fn manifest_of(id: &str) -> String {
        format!("sha256:{}", blake3::hash(id.as_bytes()).to_hex())
    }
}

impl Executor for Recording {
    fn preflight(&self, needs_play: bool) -> ToolResult<()> {
        drop(self.record(Call::Preflight { needs_play }));
        Ok(())
    }

    fn build(&self, req: &BuildRequest, sink: &dyn StepSink) -> BuildResult {
        let mut s = self.record(Call::Build {
            label: req.label.clone(),
            digest: req.digest.clone(),
            image_name: req.image_name.clone(),
            from: req.from.image().map(str::to_string),
        });
        sink.step(&req.label, "recording build");
        // Like every executor, it leaves the attempt's log where asked.
        if let Some(dir) = req.log_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(
            &req.log_path,
            format!("recording build of {}, digest {}\n", req.label, req.digest),
        );
        if s.failing.contains(&req.label) {
            s.containers.insert(
                req.container_name.clone(),
                req.from.image().map(str::to_string),
            );
            return Err(BuildFailure {
                message: format!("recorded failure of {}", req.label),
                container: Some(req.container_name.clone()),
                tests: vec![],
            });
        }
        if req.reuse_container {
            return Ok(BuildOutput {
                image_id: String::new(),
                tests: vec![],
            });
        }
        let image = StoredImage::built(&req.label, &req.digest, &req.built_name());
        let image_id = image.id.clone();
        s.add(image);
        Ok(BuildOutput {
            image_id,
            tests: vec![],
        })
    }

    fn planned_steps(&self, req: &BuildRequest) -> Vec<String> {
        vec![format!(
            "# a recorded build of {} at {}",
            req.label,
            req.digest.short()
        )]
    }

    fn run_tests(&self, req: &TestRequest) -> ToolResult<Vec<TestOutcome>> {
        drop(self.record(Call::RunTests {
            label: req.label.clone(),
            image: req.image.clone(),
        }));
        Ok(req
            .tests
            .iter()
            .map(|t| TestOutcome {
                command: t.clone(),
                passed: true,
                error: None,
                output: String::new(),
                duration_ms: 0,
            })
            .collect())
    }
}

impl ImageStore for Recording {
    fn images(&self) -> ToolResult<HashSet<String>> {
        let s = self.record(Call::Images);
        Ok(s.images.keys().cloned().collect())
    }

    fn images_named(&self) -> ToolResult<(HashSet<String>, Option<ImageNames>)> {
        let s = self.record(Call::Images);
        let ids = s.images.keys().cloned().collect();
        let names = s
            .images
            .values()
            .flat_map(|i| i.names.iter().map(|n| (n.clone(), i.id.clone())))
            .collect();
        Ok((ids, Some(names)))
    }

    fn image_list(&self) -> ToolResult<Vec<ImageInfo>> {
        let s = self.record(Call::ImageList);
        Ok(s.images
            .values()
            .map(|i| ImageInfo {
                id: i.id.clone(),
                names: i.names.clone(),
                size: i.size,
            })
            .collect())
    }

    fn committed_image(&self, name: &str) -> ToolResult<Option<ImageMeta>> {
        let s = self.record(Call::CommittedImage(name.to_string()));
        Ok(s.resolve(name).map(|id| {
            let i = &s.images[&id];
            ImageMeta {
                id,
                digest: i.digest.clone(),
                label: i.label.clone(),
                created: Some(i.created),
                arch: None,
            }
        }))
    }

    fn tag_image(&self, image: &str, name: &str) -> ToolResult<()> {
        let mut s = self.record(Call::TagImage(image.to_string(), name.to_string()));
        if let Some(id) = s.resolve(image)
            && let Some(img) = s.images.get_mut(&id)
        {
            img.names.push(name.to_string());
        }
        Ok(())
    }

    fn remove_image(&self, name: &str) -> ToolResult<RmiOutcome> {
        let mut s = self.record(Call::RemoveImage(name.to_string()));
        let Some(id) = s.resolve(name) else {
            return Ok(RmiOutcome::NotKnown);
        };
        let last = s.images[&id].names.iter().all(|n| n == name);
        if last && s.containers.values().any(|c| c.as_deref() == Some(&id)) {
            return Ok(RmiOutcome::InUse);
        }
        if last {
            s.images.remove(&id);
            return Ok(RmiOutcome::Removed);
        }
        if let Some(i) = s.images.get_mut(&id) {
            i.names.retain(|n| n != name);
        }
        Ok(RmiOutcome::Untagged)
    }

    fn containers(&self) -> ToolResult<HashSet<String>> {
        let s = self.record(Call::Containers);
        Ok(s.containers.keys().cloned().collect())
    }

    fn create_container(&self, name: &str, image: &str) -> ToolResult<()> {
        let mut s = self.record(Call::CreateContainer {
            name: name.to_string(),
            image: image.to_string(),
        });
        let Some(id) = s.resolve(image) else {
            return Err(failed("buildah", "from", "image not known"));
        };
        s.containers.insert(name.to_string(), Some(id));
        Ok(())
    }

    fn remove_container(&self, name: &str) -> ToolResult<()> {
        let mut s = self.record(Call::RemoveContainer(name.to_string()));
        match s.containers.remove(name) {
            Some(_) => Ok(()),
            None => Err(failed("buildah", "rm", "container not known")),
        }
    }

    fn attached_command_line(&self, run: &AttachedRun) -> String {
        format!("recording run {} -- {}", run.container, run.argv.join(" "))
    }

    fn run_attached(&self, run: &AttachedRun) -> ToolResult<i32> {
        drop(self.record(Call::RunAttached {
            container: run.container.clone(),
            argv: run.argv.clone(),
        }));
        Ok(0)
    }
}

impl Registry for Recording {
    fn lookup(&self, reference: &str, _tls_verify: bool) -> ToolResult<RegistryEntry> {
        let s = self.record(Call::Lookup(reference.to_string()));
        if s.registry_unreachable {
            return Err(unreachable("inspect"));
        }
        Ok(match s.registry.get(reference) {
            Some(i) => RegistryEntry::Present {
                label: i.digest.clone().unwrap_or_default(),
            },
            None => RegistryEntry::Absent,
        })
    }

    fn pull(&self, reference: &str, _tls_verify: bool) -> ToolResult<String> {
        let mut s = self.record(Call::Pull(reference.to_string()));
        if s.registry_unreachable {
            return Err(unreachable("pull"));
        }
        let Some(image) = s.registry.get(reference).cloned() else {
            return Err(failed("buildah", "pull", "manifest unknown"));
        };
        let id = image.id.clone();
        s.add(StoredImage {
            names: vec![reference.to_string()],
            ..image
        });
        Ok(id)
    }

    fn push(&self, image_id: &str, reference: &str, _tls_verify: bool) -> ToolResult<()> {
        let mut s = self.record(Call::Push {
            image_id: image_id.to_string(),
            reference: reference.to_string(),
        });
        if s.registry_unreachable {
            return Err(unreachable("push"));
        }
        if s.registry_refuses_pushes {
            return Err(failed(
                "buildah",
                "push",
                "writing blob: initiating layer upload: unauthorized: authentication required",
            ));
        }
        let Some(image) = s.images.get(image_id).cloned() else {
            return Err(failed("buildah", "push", "image not known"));
        };
        s.registry.insert(reference.to_string(), image);
        Ok(())
    }

    fn digest_label(&self, image_id: &str) -> ToolResult<Digest> {
        let s = self.record(Call::DigestLabel(image_id.to_string()));
        match s.images.get(image_id) {
            Some(i) => Ok(i.digest.clone().unwrap_or_default()),
            None => Err(failed("buildah", "inspect", "image not known")),
        }
    }

    fn manifest_digest(&self, reference: &str, _tls_verify: bool) -> ToolResult<Option<String>> {
        let s = self.record(Call::ManifestDigest(reference.to_string()));
        if s.registry_unreachable {
            return Err(unreachable("inspect"));
        }
        Ok(s.registry
            .get(reference)
            .map(|i| Recording::manifest_of(&i.id)))
    }

    fn copy_tag(&self, from: &str, to: &str, _tls_verify: bool) -> ToolResult<()> {
        let mut s = self.record(Call::CopyTag {
            from: from.to_string(),
            to: to.to_string(),
        });
        if s.registry_unreachable {
            return Err(unreachable("copy"));
        }
        if s.registry_refuses_pushes {
            return Err(failed(
                "skopeo",
                "copy",
                "writing manifest: unauthorized: authentication required",
            ));
        }
        let Some(image) = s.registry.get(from).cloned() else {
            return Err(failed("skopeo", "copy", "manifest unknown"));
        };
        s.registry.insert(to.to_string(), image);
        Ok(())
    }
}

impl Exporter for Recording {
    fn has_image(&self, image_id: &str) -> ToolResult<bool> {
        let s = self.record(Call::HasImage(image_id.to_string()));
        Ok(s.images.contains_key(image_id))
    }

    fn export(&self, req: &ExportRequest) -> ToolResult<u64> {
        drop(self.record(Call::Export {
            image_id: req.image_id.clone(),
            path: req.path.display().to_string(),
        }));
        let text = format!("recording export of {}\n", req.image_id);
        write_atomically(&req.path, |tmp| {
            std::fs::write(tmp, &text).map_err(|e| {
                ToolError::new(ToolErrorKind::Local, "recording", "export", e.to_string())
            })
        })
    }

    fn push_to(&self, image_id: &str, destination: &str, tls_verify: bool) -> ToolResult<()> {
        drop(self.record(Call::PushTo {
            image_id: image_id.to_string(),
            destination: destination.to_string(),
        }));
        match destination.strip_prefix("docker://") {
            Some(reference) => self.push(image_id, reference, tls_verify),
            None => Ok(()),
        }
    }

    fn remote_digest_label(&self, reference: &str, tls_verify: bool) -> ToolResult<Option<Digest>> {
        drop(self.record(Call::RemoteDigestLabel(reference.to_string())));
        match self.lookup(reference, tls_verify)? {
            RegistryEntry::Present { label } => Ok(Some(label)),
            RegistryEntry::Absent => Ok(None),
        }
    }
}

/// An in-memory [`super::ObjectStore`] for tests of `publish`: objects
/// with their `sha256` metadata, every upload counted, and a key whose
/// upload fails (a publish interrupted there).
/// Key -> (bytes, `sha256` metadata).
type Objects = BTreeMap<String, (Vec<u8>, Option<String>)>;

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<Objects>,
    puts: Mutex<Vec<String>>,
    fail_put: Mutex<Option<String>>,
    corrupt_put: Mutex<Option<String>>,
}

impl MemoryStore {
    /// Uploads of a key ending with `suffix` fail from now on (`None`: none).
    pub fn fail_puts_of(&self, suffix: Option<&str>) {
        *self.fail_put.lock().unwrap_or_else(|e| e.into_inner()) = suffix.map(str::to_string);
    }

    /// The keys uploaded, in order.
    pub fn puts(&self) -> Vec<String> {
        self.puts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Uploads of a key ending with `suffix` store other bytes than sent
    /// (a transfer gone wrong) from now on (`None`: none).
    pub fn corrupt_puts_of(&self, suffix: Option<&str>) {
        *self.corrupt_put.lock().unwrap_or_else(|e| e.into_inner()) = suffix.map(str::to_string);
    }
}

impl super::ObjectStore for MemoryStore {
    fn head(&self, key: &str) -> ToolResult<Option<super::ObjectInfo>> {
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        Ok(objects.get(key).map(|(b, sha)| super::ObjectInfo {
            size: b.len() as u64,
            sha256: sha.clone(),
        }))
    }

    fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        sha256: &str,
        _content_type: &str,
    ) -> ToolResult<()> {
        let failing = self.fail_put.lock().unwrap_or_else(|e| e.into_inner());
        if failing.as_deref().is_some_and(|s| key.ends_with(s)) {
            return Err(ToolError::new(
                ToolErrorKind::Failed,
                "memory",
                "put",
                format!("upload of {key} interrupted"),
            ));
        }
        let mut bytes = std::fs::read(path)
            .map_err(|e| ToolError::new(ToolErrorKind::Local, "memory", "put", format!("{e}")))?;
        let corrupt = self.corrupt_put.lock().unwrap_or_else(|e| e.into_inner());
        if corrupt.as_deref().is_some_and(|s| key.ends_with(s)) {
            bytes.reverse();
            bytes.push(b'!');
        }
        self.puts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key.to_string());
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), (bytes, Some(sha256.to_string())));
        Ok(())
    }

    fn read_sha256(&self, key: &str) -> ToolResult<(String, u64)> {
        use sha2::Digest as _;
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let Some((b, _)) = objects.get(key) else {
            return Err(ToolError::new(
                ToolErrorKind::Failed,
                "memory",
                "get",
                format!("no object {key}"),
            ));
        };
        let hex = sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        Ok((hex, b.len() as u64))
    }

    fn get(&self, key: &str) -> ToolResult<Option<Vec<u8>>> {
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        Ok(objects.get(key).map(|(b, _)| b.clone()))
    }

    fn list(&self, prefix: &str) -> ToolResult<Vec<String>> {
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        Ok(objects
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn url(&self, key: &str) -> String {
        format!("s3://memory/{key}")
    }
}
