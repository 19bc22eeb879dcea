//! `blockvault`: parse arguments, run, map the outcome to a documented exit code.

use blockvault::cli::{self, Cli};
use blockvault::error::{Error, exit};
use clap::Parser;
use std::io::Write;

fn main() {
    // Before any thread exists; see its doc for the measurement.
    blockvault::sys::limit_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::FAILURE);
        }
    };
    let code = match runtime.block_on(cli::run(cli)) {
        Ok(()) => exit::OK,
        // A combination of options clap's rules cannot express, found by a subcommand.
        Err(e) if e.downcast_ref::<clap::Error>().is_some() => {
            eprint!("{e}");
            exit::USAGE
        }
        Err(e) => {
            let kind = e.chain().find_map(|c| c.downcast_ref::<Error>());
            // After SIGHUP the terminal may be gone: a failed write must not panic.
            let say = |e: &dyn std::fmt::Display| {
                let _ = writeln!(std::io::stderr(), "error: {e:#}");
            };
            match (kind, blockvault::sys::stop_asked()) {
                (Some(Error::OutputClosed), None) => exit::OK,
                // A plain failure after a stop signal may be its consequence (a command that
                // the signal ended, a reader that went away): it is reported as the stop.
                // Damage found, a wrong key or a lock stay what they are.
                (None | Some(Error::OutputClosed), Some(signal)) => {
                    say(&e.context(Error::Interrupted { signal }));
                    exit::signalled(signal)
                }
                (kind, _) => {
                    say(&e);
                    kind.map_or(exit::FAILURE, Error::exit_code)
                }
            }
        }
    };
    // Dropping the runtime would wait for a reader thread blocked on stdin; exit instead.
    std::process::exit(code);
}
