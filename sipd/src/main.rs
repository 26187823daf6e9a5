//! The sipd binary: flags, logging, then `server::run`.

use std::process::ExitCode;

use sipd::cli::{self, Flags};

/// mimalloc instead of glibc malloc: a third of sipd's CPU time under load
/// went to glibc's malloc/free (measured with perf, see bench/README.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// No transparent huge pages for this process: with them the allocator's
/// arena is backed by 2 MiB pages that a small daemon only partly uses
/// (10,000 clients loaded: 42 MiB resident with them, 25 MiB without), and
/// sipd is meant to be small. Best effort: an old kernel just says no.
/// Runs as a constructor, before the first allocation.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static NO_HUGE_PAGES: extern "C" fn() = no_huge_pages;

#[cfg(target_os = "linux")]
extern "C" fn no_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and only
    // sets a flag on this process's memory map.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    let flags = match Flags::parse_seed(std::env::args()) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if flags.about {
        print!("{}", cli::about());
        return ExitCode::SUCCESS;
    }
    if flags.version {
        print!("{}", cli::version_line());
        return ExitCode::SUCCESS;
    }
    if flags.reload {
        return reload(&flags);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match sipd::server::run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `sipd -r`: ask the running sipd to reload, print the outcome.
fn reload(flags: &Flags) -> ExitCode {
    let path = flags.ctl_path();
    let result = proto::Client::connect(&path)
        .map_err(|e| e.to_string())
        .and_then(|mut c| c.call(proto::Command::Reload).map_err(|e| e.to_string()))
        .and_then(|r| r.into_result());
    match result {
        Ok(proto::Reply::Reload(r)) => {
            print!("{r}");
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("sipd: unexpected reply to reload");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sipd: reload failed: {e}");
            ExitCode::FAILURE
        }
    }
}
