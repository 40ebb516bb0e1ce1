//! The access log: one line per request, `[gateway] access_log`. A line
//! names the time, the client, the method, the path (never the query: a
//! callback's `code` and `state`, an application's own tokens), the
//! status, the body bytes sent, the duration and the upstream's share (ms),
//! who it was (the openid, or its hash with `log_openid = "hash"`) and what
//! the gate did: `pass`, `gate` (the gate answered itself) or
//! `upstream_error`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;
use wechat_oauth::config::AccessLog;

/// One request, as its access-log line shows it.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// The `[[site]]` that answered (only with several sites).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<&'a str>,
    /// When it ended (RFC 3339, UTC).
    pub time: String,
    /// The client address, if known.
    pub client: Option<String>,
    /// The method.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The status sent (0: none, the connection ended first).
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: usize,
    /// From the request's start to its end, in ms.
    pub duration_ms: u64,
    /// From the request to the application to its response header, in ms.
    pub upstream_ms: Option<u64>,
    /// Who it was: the openid (or its hash).
    pub openid: Option<String>,
    /// `pass`, `gate` or `upstream_error`.
    pub outcome: &'static str,
}

/// Where the lines go.
pub struct AccessLogger {
    sink: Sink,
}

enum Sink {
    Off,
    Stderr,
    File {
        path: PathBuf,
        file: Mutex<Option<std::fs::File>>,
    },
}

fn open(path: &PathBuf) -> Option<std::fs::File> {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open [gateway] access_log");
            None
        }
    }
}

impl AccessLogger {
    /// A logger for `[gateway] access_log`.
    pub fn new(config: &AccessLog) -> AccessLogger {
        let sink = match config {
            AccessLog::Off => Sink::Off,
            AccessLog::Stderr => Sink::Stderr,
            AccessLog::File(path) => Sink::File {
                file: Mutex::new(open(path)),
                path: path.clone(),
            },
        };
        AccessLogger { sink }
    }

    /// Opens the file again (after logrotate moved it): SIGUSR1, SIGHUP.
    pub fn reopen(&self) {
        if let Sink::File { path, file } = &self.sink {
            *file.lock().unwrap_or_else(|e| e.into_inner()) = open(path);
            tracing::info!(path = %path.display(), "access log reopened");
        }
    }

    /// Whether lines are written (`access_log` is not `"off"`): when not,
    /// a request's [`Entry`] need not be built at all.
    pub fn is_on(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    /// Writes one request's line.
    pub fn write(&self, entry: &Entry<'_>) {
        match &self.sink {
            Sink::Off => {}
            Sink::Stderr => tracing::info!(
                target: "access",
                site = entry.site,
                client = entry.client.as_deref().unwrap_or("-"),
                method = entry.method,
                path = entry.path,
                status = entry.status,
                bytes = entry.bytes,
                duration_ms = entry.duration_ms,
                upstream_ms = entry.upstream_ms,
                openid = entry.openid.as_deref().unwrap_or("-"),
                outcome = entry.outcome,
            ),
            Sink::File { file, .. } => {
                let mut line = serde_json::to_vec(entry).expect("entries serialize");
                line.push(b'\n');
                if let Some(file) = file.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    let _ = file.write_all(&line);
                }
            }
        }
    }
}

/// Now, RFC 3339 in UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
