//! The process launcher: a child whose stdout and stderr are kept line by
//! line (for readiness lines and log-leak checks), which is killed when
//! dropped, and which can be sent SIGTERM and awaited with a deadline.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Collected output lines of a process (both streams, in arrival order).
/// Clones share the lines; one `Output` may outlive several processes (a
/// restart keeps the earlier lines).
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    fn collect(&self, stream: impl AsyncRead + Unpin + Send + 'static) {
        let lines = self.0.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The JSON log lines whose `message` (tracing's JSON format) or `msg`
    /// field is `message`.
    pub fn json_lines(&self, message: &str) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message || v["fields"]["message"] == message)
            .collect()
    }
}

/// A running child process; SIGKILLed when dropped.
pub struct Proc {
    child: Child,
    name: String,
    pub output: Output,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and both output streams collected.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        Proc::spawn_into(name, cmd, Output::default())
    }

    /// Like [`Proc::spawn`], appending to an existing [`Output`].
    pub fn spawn_into(name: &str, cmd: &mut Command, output: Output) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        if let Some(out) = child.stdout.take() {
            output.collect(out);
        }
        if let Some(err) = child.stderr.take() {
            output.collect(err);
        }
        Proc {
            child,
            name: name.to_string(),
            output,
        }
    }

    /// Everything it wrote so far.
    pub fn log(&self) -> String {
        self.output.text()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the `n`th (from 0) JSON log line with this `message`.
    pub async fn json_line(&self, within: Duration, message: &str, n: usize) -> serde_json::Value {
        let out = self.output.clone();
        let what = format!("{}'s log line {message:?}", self.name);
        crate::eventually(within, &what, || {
            let line = out.json_lines(message).into_iter().nth(n);
            async move { line }
        })
        .await
    }

    /// SIGTERM, as Kubernetes sends before a pod stops.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("the process still runs");
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM {pid} ({}) failed", self.name);
    }

    /// Waits up to `within` for the exit; on timeout kills it and panics
    /// with its output.
    pub async fn wait(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait for child"),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!(
                    "{} did not exit within {within:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
        }
    }

    /// Whether it has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL: gone without a goodbye.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
