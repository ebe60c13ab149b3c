//! `tabby-bgpd --config FILE`: the same daemon as `tabby bgpd`, as a binary
//! of this crate so its integration tests and benchmark can run it without
//! building the whole `tabby` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args
        .iter()
        .position(|a| a == "--config" || a == "-c")
        .and_then(|i| args.get(i + 1))
    else {
        eprintln!("usage: tabby-bgpd --config FILE");
        return ExitCode::from(2);
    };
    let filter = std::env::var("TABBY_LOG").unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match tabby_speaker::daemon::run(std::path::Path::new(path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tabby-bgpd: {e}");
            ExitCode::FAILURE
        }
    }
}
