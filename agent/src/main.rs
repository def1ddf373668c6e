//! `mender-connect`: the device daemon binary; everything lives in the library.

fn main() {
    std::process::exit(mender_connect::cli::main());
}
