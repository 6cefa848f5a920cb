//! Write the package and attack fixtures: `make_fixtures DIR` writes
//! `DIR/attacks/` and `DIR/package/` (the repository keeps them in
//! `tests/fixtures/`; see `tests/fixtures/generate.sh`).

#[path = "../tests/support/fixtures.rs"]
mod fixtures;

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: make_fixtures DIR");
        std::process::exit(2);
    };
    fixtures::write_all(std::path::Path::new(&dir))
}
