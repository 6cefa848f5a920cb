//! The `hotpatch` command-line tool.
fn main() {}
