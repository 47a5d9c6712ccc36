//! The history: every operation and fault as JSON lines (`history.jsonl`), and in memory
//! for the checker. An operation writes one `invoke` line and one completion line (`ok`,
//! `fail` or `unknown`; faults complete with `ok` or `fail`), both with the same `op` number.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

/// How an operation ended, as a client can know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    Fail,
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
        }
    }
}

/// One completed operation, as the checker reads it.
#[derive(Clone, Debug)]
pub struct Op {
    pub id: u64,
    pub process: String,
    pub kind: String,
    pub args: Vec<String>,
    pub invoked: f64,
    pub completed: f64,
    pub outcome: Outcome,
    pub result: Value,
}

struct Inner {
    file: std::fs::File,
    next: u64,
    pending: std::collections::HashMap<u64, (String, String, Vec<String>, f64)>,
    done: Vec<Op>,
}

pub struct History {
    start: Instant,
    inner: Mutex<Inner>,
}

impl History {
    pub fn create(path: &Path) -> std::io::Result<History> {
        Ok(History {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                file: std::fs::File::create(path)?,
                next: 1,
                pending: Default::default(),
                done: Vec::new(),
            }),
        })
    }

    /// Seconds since the run started.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn write(inner: &mut Inner, v: &Value) {
        let _ = writeln!(inner.file, "{v}");
        let _ = inner.file.flush();
    }

    /// Records the invocation of `kind` by `process`; returns the operation's number.
    pub fn invoke(&self, process: &str, kind: &str, args: &[String]) -> u64 {
        let t = self.now();
        let mut g = self.inner.lock().unwrap();
        let id = g.next;
        g.next += 1;
        let line = json!({"t": round(t), "op": id, "process": process, "kind": kind,
            "args": args, "type": "invoke"});
        History::write(&mut g, &line);
        g.pending.insert(
            id,
            (process.to_string(), kind.to_string(), args.to_vec(), t),
        );
        id
    }

    /// Records how operation `id` ended.
    pub fn complete(&self, id: u64, outcome: Outcome, result: Value) {
        let t = self.now();
        let mut g = self.inner.lock().unwrap();
        let Some((process, kind, args, invoked)) = g.pending.remove(&id) else {
            return;
        };
        let line = json!({"t": round(t), "op": id, "process": process, "kind": kind,
            "args": args, "type": outcome.as_str(), "result": result});
        History::write(&mut g, &line);
        g.done.push(Op {
            id,
            process,
            kind,
            args,
            invoked,
            completed: t,
            outcome,
            result,
        });
    }

    /// A free-form line (phase changes, checker findings).
    pub fn note(&self, what: &str, detail: Value) {
        let t = self.now();
        let mut g = self.inner.lock().unwrap();
        let line = json!({"t": round(t), "process": "harness", "kind": what, "type": "info",
            "result": detail});
        History::write(&mut g, &line);
    }

    /// Every completed operation, in completion order.
    pub fn ops(&self) -> Vec<Op> {
        self.inner.lock().unwrap().done.clone()
    }
}

fn round(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}
