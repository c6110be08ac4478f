//! `sync-daemon`: parse the arguments, run, report a failure as `error: …` on
//! stderr and exit 1 (2 for a usage error, as clap does).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sync_daemon::init_tracing();
    let cli = sync_daemon::Cli::parse();
    match sync_daemon::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            // The whole chain, each cause once; multi-line messages (a TOML
            // syntax error with its line and caret) keep their lines.
            eprintln!("error: {e:#}");
            if e.downcast_ref::<sync_daemon::UsageError>().is_some() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
