//! `polytrace build`: run every component's `build` command from the
//! manifest's directory, several at once, with a line of progress per
//! component and the tail of the output of any that fails.
//!
//! Build commands own their up-to-date checks (the repository's
//! `scripts/build-guest.sh` skips unchanged components; cargo does the
//! same). A component whose `source` was not rewritten by its command is
//! reported as up to date.

use crate::manifest::{Component, Manifest};
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{Mutex, Semaphore};

/// Lines of a failed build's output that are shown.
pub const TAIL_LINES: usize = 25;

/// How one build command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Built,
    UpToDate,
    /// Exit status (or signal) and the last lines of its output.
    Failed {
        status: String,
        tail: Vec<String>,
    },
}

/// One build command and the components it builds (components with the
/// same command share one run).
#[derive(Debug)]
pub struct Job {
    pub command: String,
    pub components: Vec<String>,
    pub languages: Vec<String>,
    sources: Vec<std::path::PathBuf>,
}

/// The build commands of `manifest`, deduplicated, in manifest order.
pub fn jobs(manifest: &Manifest) -> Vec<Job> {
    let mut jobs: Vec<Job> = Vec::new();
    for c in &manifest.components {
        let Some(command) = c.build.as_deref() else {
            continue;
        };
        let language = c.language.clone().unwrap_or_else(|| "unknown".into());
        match jobs.iter_mut().find(|j| j.command == command) {
            Some(j) => {
                j.components.push(c.id.clone());
                j.languages.push(language);
                j.sources.push(c.source.clone());
            }
            None => jobs.push(Job {
                command: command.to_string(),
                components: vec![c.id.clone()],
                languages: vec![language],
                sources: vec![c.source.clone()],
            }),
        }
    }
    jobs
}

impl Job {
    /// `api-gateway (python)`, or several of those.
    pub fn label(&self) -> String {
        self.components
            .iter()
            .zip(&self.languages)
            .map(|(c, l)| format!("{c} ({l})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Keep the last [`TAIL_LINES`] lines of a stream.
async fn tail_of(stream: impl AsyncRead + Unpin, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut t = tail.lock().await;
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}

/// Run one job's command with `sh -c` in `dir`.
async fn run(job: &Job, dir: &std::path::Path) -> Outcome {
    let before: Vec<Option<SystemTime>> = job.sources.iter().map(|s| modified(s)).collect();
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&job.command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failed {
                status: format!("could not start `sh`: {e}"),
                tail: Vec::new(),
            };
        }
    };
    // stdout and stderr interleave in one tail, as in a terminal.
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let out = tokio::spawn(tail_of(child.stdout.take().unwrap(), tail.clone()));
    let err = tokio::spawn(tail_of(child.stderr.take().unwrap(), tail.clone()));
    let status = child.wait().await;
    let _ = tokio::join!(out, err);
    let tail: Vec<String> = tail.lock().await.iter().cloned().collect();
    match status {
        Ok(s) if s.success() => {
            let after: Vec<Option<SystemTime>> = job.sources.iter().map(|s| modified(s)).collect();
            if after == before && before.iter().all(Option::is_some) {
                Outcome::UpToDate
            } else {
                Outcome::Built
            }
        }
        Ok(s) => Outcome::Failed {
            status: s.to_string(),
            tail,
        },
        Err(e) => Outcome::Failed {
            status: e.to_string(),
            tail,
        },
    }
}

/// Run every build command of `manifest`, `parallel` at a time, printing
/// progress to stderr. Fails naming every component whose build failed.
pub async fn build_all(manifest: &Manifest, parallel: usize) -> anyhow::Result<()> {
    let jobs = jobs(manifest);
    let unbuilt: Vec<&Component> = manifest
        .components
        .iter()
        .filter(|c| c.build.is_none())
        .collect();
    for c in &unbuilt {
        eprintln!(
            "  -  {}: no build command; using {}",
            c.id,
            c.source.display()
        );
    }
    if jobs.is_empty() {
        return Ok(());
    }
    let total = jobs.len();
    eprintln!(
        "building {total} component{} of `{}`, {parallel} at a time",
        if total == 1 { "" } else { "s" },
        manifest.app
    );
    let slots = Arc::new(Semaphore::new(parallel.max(1)));
    let running: Arc<std::sync::Mutex<Vec<(String, Instant)>>> = Arc::default();
    let dir = manifest.dir.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for job in jobs {
        let (slots, running, dir) = (slots.clone(), running.clone(), dir.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire().await;
            let started = Instant::now();
            let label = job.label();
            running.lock().unwrap().push((label.clone(), started));
            let outcome = run(&job, &dir).await;
            running.lock().unwrap().retain(|(l, _)| *l != label);
            (job, outcome, started.elapsed())
        });
    }
    // While builds run, say every 10 s which are still going.
    let ticker = {
        let running = running.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let now: Vec<String> = running
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(l, t)| format!("{l} {}s", t.elapsed().as_secs()))
                    .collect();
                if !now.is_empty() {
                    eprintln!("  …  still building: {}", now.join("; "));
                }
            }
        })
    };
    let mut failed = Vec::new();
    let mut done = 0;
    // Reported as each finishes.
    while let Some(finished) = tasks.join_next().await {
        let (job, outcome, took) = finished?;
        done += 1;
        let label = job.label();
        match outcome {
            Outcome::Built => eprintln!("  ok [{done}/{total}] {label}: built in {took:.1?}"),
            Outcome::UpToDate => eprintln!("  ok [{done}/{total}] {label}: up to date"),
            Outcome::Failed { status, tail } => {
                eprintln!(
                    "  FAILED [{done}/{total}] {label}: `{}` {status} after {took:.1?}; its last output:",
                    job.command
                );
                for line in tail {
                    eprintln!("      | {line}");
                }
                failed.extend(job.components);
            }
        }
    }
    ticker.abort();
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "build failed for component{} {}",
            if failed.len() == 1 { "" } else { "s" },
            failed
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// How many builds to run at once: the machine's cores.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_sharing_a_command_build_once() {
        let m = Manifest::parse(
            std::path::Path::new("/app/polytrace.toml"),
            r#"
app = "a"
[[component]]
id = "one"
source = "one.wasm"
language = "python"
build = "make all"
[[component]]
id = "two"
source = "two.wasm"
build = "make all"
[[component]]
id = "three"
source = "three.wasm"
build = "make three"
[[component]]
id = "four"
source = "four.wasm"
"#,
        )
        .unwrap();
        let jobs = jobs(&m);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].components, ["one", "two"]);
        assert_eq!(jobs[0].label(), "one (python), two (unknown)");
        assert_eq!(jobs[1].command, "make three");
    }
}
