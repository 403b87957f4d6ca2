use clap::Parser;

fn main() {
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
