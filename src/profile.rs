//! `build --profile FILE`: a Chrome trace-event file of the build, which
//! Perfetto (ui.perfetto.dev) and chrome://tracing open. One track per
//! worker (a layer takes the lowest free track when it starts), a span per
//! layer, per step inside it, and per Ansible task inside its play.
//!
//! [`Profiler`] wraps the build's [`Reporter`]: it passes every event on
//! and notes its time. No I/O; the command writes [`Profile::json`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::digest::Digest;
use crate::executor::{StepSink, TaskEvent};
use crate::progress::Reporter;

/// What the profiler has seen.
#[derive(Default)]
pub struct Profile {
    start: Option<Instant>,
    spans: Vec<Span>,
    /// Per running layer: its track, its span, its open step and task.
    open: HashMap<String, Open>,
    /// Tracks in use.
    busy: Vec<bool>,
}

struct Open {
    track: usize,
    layer: usize,
    step: Option<usize>,
    task: Option<usize>,
}

/// One trace-event span ("complete" event).
#[derive(Clone, Serialize)]
pub struct Span {
    pub name: String,
    pub cat: &'static str,
    /// Microseconds since the build started.
    pub ts: u64,
    pub dur: u64,
    pub tid: usize,
    pub args: serde_json::Value,
}

impl Profile {
    fn now(&mut self) -> u64 {
        let start = *self.start.get_or_insert_with(Instant::now);
        u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn open_span(
        &mut self,
        name: String,
        cat: &'static str,
        tid: usize,
        args: serde_json::Value,
    ) -> usize {
        let ts = self.now();
        self.spans.push(Span {
            name,
            cat,
            ts,
            dur: 0,
            tid,
            args,
        });
        self.spans.len() - 1
    }

    fn close_span(&mut self, i: usize, at: u64) {
        let s = &mut self.spans[i];
        s.dur = at.saturating_sub(s.ts);
    }

    /// The layer's open record, opening its span on a free track if needed.
    fn layer(&mut self, label: &str) -> &mut Open {
        if !self.open.contains_key(label) {
            let track = match self.busy.iter().position(|b| !b) {
                Some(t) => t,
                None => {
                    self.busy.push(false);
                    self.busy.len() - 1
                }
            };
            self.busy[track] = true;
            let layer = self.open_span(label.to_string(), "layer", track, serde_json::json!({}));
            self.open.insert(
                label.to_string(),
                Open {
                    track,
                    layer,
                    step: None,
                    task: None,
                },
            );
        }
        self.open.get_mut(label).expect("just inserted")
    }

    fn close_task(&mut self, label: &str, at: u64) {
        if let Some(i) = self.open.get_mut(label).and_then(|o| o.task.take()) {
            self.close_span(i, at);
        }
    }

    fn close_step(&mut self, label: &str, at: u64) {
        self.close_task(label, at);
        if let Some(i) = self.open.get_mut(label).and_then(|o| o.step.take()) {
            self.close_span(i, at);
        }
    }

    fn step(&mut self, label: &str, step: &str) {
        let at = self.now();
        self.close_step(label, at);
        let track = self.layer(label).track;
        let i = self.open_span(step.to_string(), "step", track, serde_json::json!({}));
        self.layer(label).step = Some(i);
    }

    fn task(&mut self, label: &str, ev: &TaskEvent) {
        if ev.event == "running" {
            return;
        }
        let at = self.now();
        self.close_task(label, at);
        if ev.event != "task" {
            // A result: its task's span ends here, with its status.
            if let Some(s) = self
                .spans
                .iter_mut()
                .rev()
                .find(|s| s.cat == "task" && s.name == ev.title())
            {
                s.args = serde_json::json!({ "status": ev.status, "path": ev.path });
            }
            return;
        }
        let track = self.layer(label).track;
        let i = self.open_span(
            ev.title(),
            "task",
            track,
            serde_json::json!({ "path": ev.path }),
        );
        self.layer(label).task = Some(i);
    }

    /// The layer ended as `status`.
    fn end(&mut self, label: &str, status: &str, detail: serde_json::Value) {
        let at = self.now();
        self.close_step(label, at);
        let open = self.layer(label);
        let (track, layer) = (open.track, open.layer);
        self.open.remove(label);
        self.busy[track] = false;
        self.close_span(layer, at);
        let mut args = serde_json::json!({ "status": status });
        if let (Some(a), serde_json::Value::Object(d)) = (args.as_object_mut(), detail) {
            a.extend(d);
        }
        self.spans[layer].args = args;
    }

    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The trace-event JSON document: the spans as "complete" events and a
    /// name per track.
    pub fn json(&self) -> serde_json::Value {
        let mut events: Vec<serde_json::Value> = (0..self.busy.len())
            .map(|t| {
                serde_json::json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": t,
                    "args": {"name": format!("worker {}", t + 1)}})
            })
            .collect();
        events.push(
            serde_json::json!({"name": "process_name", "ph": "M", "pid": 1, "tid": 0,
            "args": {"name": "layerbuild build"}}),
        );
        for s in &self.spans {
            events.push(serde_json::json!({
                "name": s.name, "cat": s.cat, "ph": "X", "ts": s.ts, "dur": s.dur,
                "pid": 1, "tid": s.tid, "args": s.args,
            }));
        }
        serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ms" })
    }
}

/// A [`Reporter`] that notes each event in a shared [`Profile`] and passes
/// it on to `inner`.
pub struct Profiler {
    pub inner: Box<dyn Reporter>,
    pub profile: Arc<Mutex<Profile>>,
}

impl Profiler {
    fn with(&self, f: impl FnOnce(&mut Profile)) {
        f(&mut self.profile.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl StepSink for Profiler {
    fn step(&self, label: &str, step: &str) {
        if !step.starts_with("ansible: ") {
            self.with(|p| p.step(label, step));
        }
        self.inner.step(label, step);
    }

    fn task(&self, label: &str, event: &TaskEvent) {
        self.with(|p| p.task(label, event));
        self.inner.task(label, event);
    }

    fn steps_done(&self, label: &str) {
        self.with(|p| p.end(label, "outputs", serde_json::json!({})));
        self.inner.steps_done(label);
    }
}

impl Reporter for Profiler {
    fn started(&self, label: &str, digest: &Digest) {
        self.with(|p| {
            p.layer(label);
            let i = p.open[label].layer;
            p.spans[i].args = serde_json::json!({ "digest": digest.short() });
        });
        self.inner.started(label, digest);
    }
    fn cached(&self, label: &str, image: &str) {
        self.with(|p| p.end(label, "cached", serde_json::json!({ "image": image })));
        self.inner.cached(label, image);
    }
    fn pulled(&self, label: &str, reference: &str) {
        self.with(|p| {
            p.end(
                label,
                "pulled",
                serde_json::json!({ "reference": reference }),
            )
        });
        self.inner.pulled(label, reference);
    }
    fn built(&self, label: &str, elapsed: Duration) {
        self.with(|p| p.end(label, "built", serde_json::json!({})));
        self.inner.built(label, elapsed);
    }
    fn failed(&self, label: &str, message: &str) {
        self.with(|p| p.end(label, "failed", serde_json::json!({ "error": message })));
        self.inner.failed(label, message);
    }
    fn skipped(&self, label: &str, reason: &str) {
        self.inner.skipped(label, reason);
    }
    fn println(&self, text: &str) {
        self.inner.println(text);
    }
    fn finish(&self) {
        self.inner.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(event: &str, name: &str) -> TaskEvent {
        TaskEvent {
            event: event.into(),
            name: name.into(),
            status: (event == "result").then(|| "ok".into()),
            ..Default::default()
        }
    }

    #[test]
    fn layers_take_free_tracks_and_steps_and_tasks_nest_inside_them() {
        let profile = Arc::new(Mutex::new(Profile::default()));
        let p = Profiler {
            inner: Box::new(crate::progress::QuietReporter),
            profile: profile.clone(),
        };
        let d = Digest::from("ab".repeat(32));
        p.started("//a/x", &d);
        p.step("//a/x", "buildah from");
        p.started("//a/y", &d);
        p.step("//a/x", "ansible-playbook x.yml");
        p.step("//a/x", "ansible: TASK [one]");
        p.task("//a/x", &task("task", "one"));
        p.task("//a/x", &task("result", "one"));
        p.built("//a/x", Duration::ZERO);
        // The first track is free again.
        p.started("//a/z", &d);
        p.failed("//a/z", "no");
        p.cached("//a/y", "img");
        let prof = profile.lock().unwrap();
        let spans = prof.spans();
        let tid = |name: &str| spans.iter().find(|s| s.name == name).unwrap().tid;
        assert_eq!((tid("//a/x"), tid("//a/y"), tid("//a/z")), (0, 1, 0));
        let names: Vec<(&str, &str)> = spans.iter().map(|s| (s.cat, s.name.as_str())).collect();
        assert_eq!(
            names,
            vec![
                ("layer", "//a/x"),
                ("step", "buildah from"),
                ("layer", "//a/y"),
                ("step", "ansible-playbook x.yml"),
                ("task", "one"),
                ("layer", "//a/z")
            ]
        );
        // Each child lies within its layer.
        let x = &spans[0];
        for child in &spans[1..] {
            if child.tid == 0 && child.cat != "layer" {
                assert!(child.ts >= x.ts && child.ts + child.dur <= x.ts + x.dur);
            }
        }
        assert_eq!(spans[0].args["status"], "built");
        assert_eq!(spans[2].args["status"], "cached");
        assert_eq!(spans[5].args["error"], "no");
        let json = prof.json();
        let events = json["traceEvents"].as_array().unwrap();
        assert!(
            events
                .iter()
                .any(|e| e["ph"] == "M" && e["args"]["name"] == "worker 2")
        );
        assert_eq!(events.iter().filter(|e| e["ph"] == "X").count(), 6);
    }
}
