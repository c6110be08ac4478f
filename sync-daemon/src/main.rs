//! `sync-daemon`: parse the arguments, run, report a failure as `error: …` on
//! stderr and exit 1 (2 for a usage error, as clap does).

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Few blocking threads: each thread that allocates gets its own malloc
    // arena, which keeps what it freed; the loader's preparing work, file
    // reads and writes and the drift scan need no more than these.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(sync_daemon::BLOCKING_THREADS)
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(main_async())
}

async fn main_async() -> std::process::ExitCode {
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
