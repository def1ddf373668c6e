//! mender-mock-server (being written; see issue 4).
fn main() {
    eprintln!("mender-mock-server: not implemented yet");
    std::process::exit(2);
}
