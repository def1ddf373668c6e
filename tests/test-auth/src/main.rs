//! mender-test-auth: serves `io.mender.AuthenticationManager` (interface `io.mender.Authentication1`
//! at `/io/mender/AuthenticationManager`) on a D-Bus bus, the way the Mender client 3.x and
//! `mender-auth` 4.x do, with a token and server URL given on the command line (see the library for the logic).
//!
//! ```text
//! mender-test-auth [--bus ADDR] [--token T | --token-file F] [--server-url U] [--fetch-token T]
//! ```
//! The bus is `--bus`, else `DBUS_SYSTEM_BUS_ADDRESS`, else the system bus.
//! stdout: `ready` once the name is owned, then one line per event: `GetJwtToken`, `FetchJwtToken`,
//! `emit <token> <url>` (an empty value prints as `-`).
//! stdin, one command per line: `<TOKEN> <URL>` sets both and emits `JwtTokenStateChange`; `clear`
//! empties both and emits; `emit` emits the current pair; `quit` exits. End of input is ignored.
//! `FetchJwtToken` answers true, takes `--fetch-token` as the token if the current one is empty,
//! then emits the current pair (signals are broadcast, as the real services do).

use std::io::{BufRead, Write};
use std::time::Duration;

use mender_test_auth::{AuthService, Event, ServiceConfig};

fn usage() -> ! {
    eprintln!(
        "usage: mender-test-auth [--bus ADDR] [--token T | --token-file F] [--server-url U] [--fetch-token T]"
    );
    std::process::exit(2);
}

fn parse_args() -> ServiceConfig {
    let mut opts = ServiceConfig { bus: std::env::var("DBUS_SYSTEM_BUS_ADDRESS").ok(), ..Default::default() };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).unwrap_or_else(|| usage());
        match name.as_str() {
            "--bus" | "--address" => opts.bus = Some(value()),
            "--system" => opts.bus = None,
            "--token" => opts.token = value(),
            "--token-file" => {
                let path = value();
                match std::fs::read_to_string(&path) {
                    Ok(t) => opts.token = t.trim().to_owned(),
                    Err(e) => {
                        eprintln!("mender-test-auth: cannot read {path}: {e}");
                        std::process::exit(1);
                    }
                }
            }
            "--server-url" => opts.server_url = value(),
            "--fetch-token" => opts.fetch_token = Some(value()),
            "-h" | "--help" => usage(),
            _ => {
                eprintln!("mender-test-auth: unknown argument {arg}");
                usage();
            }
        }
    }
    opts
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn show(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn main() {
    let service = match AuthService::start(parse_args()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mender-test-auth: {e}");
            std::process::exit(1);
        }
    };
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    say("ready");
    loop {
        if !service.is_running() {
            eprintln!("mender-test-auth: lost the bus");
            std::process::exit(1);
        }
        while let Some(event) = service.next_event(Duration::from_millis(20)) {
            match event {
                Event::GetJwtToken => say("GetJwtToken"),
                Event::FetchJwtToken => say("FetchJwtToken"),
                Event::Emitted(t, u) => say(&format!("emit {} {}", show(&t), show(&u))),
            }
        }
        while let Ok(line) = rx.try_recv() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["quit"] => return,
                ["emit"] => service.emit(),
                ["clear"] => service.clear(),
                [token, url] => service.set(token, url),
                _ => eprintln!(
                    "mender-test-auth: ignoring {line:?} (expected `TOKEN URL`, clear, emit or quit)"
                ),
            }
        }
    }
}
