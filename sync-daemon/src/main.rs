//! `sync-daemon`: parse the arguments, run, map failure to a one-line error and exit 1.

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
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}
