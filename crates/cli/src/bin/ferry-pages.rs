//! `ferry-pages`: ferry's lazy-pages server (see `ferry_pages::server`). Built with the CLI so
//! that it lands next to the `ferry` binary, where the agent looks for it.

fn main() {
    std::process::exit(ferry_pages::cli::main());
}
