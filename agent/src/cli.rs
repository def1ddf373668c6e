//! Command line: `mender-connect [--config F] [--fallback-config F] [--debug|--trace] <daemon|version|check-config>`.

/// Parses `std::env::args()`, runs the command and returns the process exit code.
pub fn main() -> i32 {
    eprintln!("mender-connect: not implemented yet");
    2
}
