//! Log set-up shared by the binaries: `tracing` to stderr, filter from
//! `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Directives always appended to the filter, whatever `RUST_LOG` says. The
/// HTTP client's own logs print request URLs, and WeChat's API URLs carry
/// the app secret, codes and tokens; Pingora's debug and trace records print
/// whole requests, with the callback's code and the session cookie.
pub const ALWAYS: [&str; 8] = [
    "reqwest=warn",
    "hyper_util=warn",
    "hyper=warn",
    "pingora=info",
    "pingora_core=info",
    "pingora_proxy=info",
    "pingora_cache=info",
    "pingora_pool=info",
];

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`
    /// (with `message`), for log collectors.
    Json,
}

/// Installs the global subscriber (also capturing Pingora's `log` records).
pub fn init(format: Format) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in ALWAYS {
        filter = filter.add_directive(directive.parse().expect("static directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        Format::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        Format::Json => builder.json().with_current_span(false).try_init(),
    };
}
