use clap::Parser;

fn main() {
    // `certlab sweep x --dry-run | head` and the like: a closed pipe ends the program quietly,
    // as it does any Unix filter, instead of a panic on the next print.
    // SAFETY: restoring a signal's default disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    certlab::alloc::tune();
    let cli = certlab::cli::Cli::parse();
    match certlab::cli::main_with(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
