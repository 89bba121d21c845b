//! A guest's stdout and stderr as log records: every complete line becomes
//! one record (stdout INFO, stderr WARN) correlated with the span the guest
//! was in when it wrote the line's end. Writing never blocks or fails; what
//! is left without a newline when the request ends is emitted then.

use super::{Logs, MAX_LINE};
use crate::telemetry::traces::CurrentSpan;
use bytes::Bytes;
use opentelemetry::KeyValue;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

struct Inner {
    logs: Arc<Logs>,
    component: usize,
    severity: u8,
    stream: &'static str,
    span: Arc<CurrentSpan>,
    line: Mutex<Vec<u8>>,
}

impl Inner {
    fn write(&self, mut bytes: &[u8]) {
        let mut line = self.line.lock().unwrap_or_else(|e| e.into_inner());
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&bytes[..i]);
                    bytes = &bytes[i + 1..];
                    let text = std::mem::take(&mut *line);
                    self.emit(&text);
                }
                None => {
                    line.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
            while line.len() >= MAX_LINE {
                let rest = line.split_off(MAX_LINE);
                let text = std::mem::replace(&mut *line, rest);
                self.emit(&text);
            }
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || !self.logs.enabled(self.severity) {
            return;
        }
        let body = String::from_utf8_lossy(line).into_owned();
        self.logs.emit(
            self.component,
            self.severity,
            body,
            vec![KeyValue::new("log.iostream", self.stream)],
            Some(&self.span.get()),
        );
    }
}

impl Inner {
    /// Emit what was written without a newline so far.
    fn end_line(&self) {
        let rest = std::mem::take(&mut *self.line.lock().unwrap_or_else(|e| e.into_inner()));
        self.emit(&rest);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.end_line();
    }
}

/// A guest's stdout or stderr; clones write to the same line buffer.
#[derive(Clone)]
pub struct GuestOutput(Arc<Inner>);

impl GuestOutput {
    pub fn stdout(logs: Arc<Logs>, component: usize, span: Arc<CurrentSpan>) -> GuestOutput {
        Self::new(logs, component, span, super::STDOUT_SEVERITY, "stdout")
    }

    pub fn stderr(logs: Arc<Logs>, component: usize, span: Arc<CurrentSpan>) -> GuestOutput {
        Self::new(logs, component, span, super::STDERR_SEVERITY, "stderr")
    }

    fn new(
        logs: Arc<Logs>,
        component: usize,
        span: Arc<CurrentSpan>,
        severity: u8,
        stream: &'static str,
    ) -> GuestOutput {
        GuestOutput(Arc::new(Inner {
            logs,
            component,
            severity,
            stream,
            span,
            line: Mutex::new(Vec::new()),
        }))
    }
}

impl GuestOutput {
    /// Emit a line the guest left unterminated, as its own record, in the
    /// current span: called when a request ends, so a warm instance's next
    /// request does not carry it.
    pub fn end_line(&self) {
        self.0.end_line();
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.write(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.write(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
