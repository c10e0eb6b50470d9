//! Shared plumbing for the etcd-monitor binaries: etcd connection options and client
//! construction, HTTP serving with graceful shutdown, the shutdown signal and tracing setup.
//! Nothing product-specific lives here.

pub mod daemon;
pub mod etcd;
pub mod http;
pub mod insecure;
pub mod process;
pub mod remote;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

/// Parses a human duration flag such as `5s`, `250ms` or `1m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// The one line to print for a clap error (`<program>: <what is wrong> (see --help)`), or
/// `None` when it is `--help` or `--version` output, which clap prints itself.
pub fn usage_error_line(program: &str, e: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return None;
    }
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim()
        .trim_start_matches("error: ");
    Some(format!("{program}: {first} (see --help)"))
}

/// Parses the command line like clap's `Parser::parse`, but a usage error is one line
/// (see [`usage_error_line`]) and exit code 2, as for every other configuration problem.
/// `--help` and `--version` print and exit 0.
pub fn parse_args<T: clap::Parser>(program: &str) -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) => match usage_error_line(program, &e) {
            None => e.exit(),
            Some(line) => {
                eprintln!("{line}");
                std::process::exit(2);
            }
        },
    }
}
