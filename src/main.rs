//! The `freshen` binary: parse the command line and hand over to [`freshen::cli::run`].

use clap::Parser;

fn main() {
    let args = freshen::cli::Args::parse();
    std::process::exit(freshen::cli::run(args));
}
