//! mender-test-auth (being written; see issue 3).
fn main() {
    eprintln!("mender-test-auth: not implemented yet");
    std::process::exit(2);
}
