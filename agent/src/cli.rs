//! Command line, compatible with mender-connect 2.1.0 (urfave/cli):
//! `mender-connect [--config|-c FILE] [--fallback-config|-b FILE] [--debug|-d] [--trace|--dd]
//! <daemon|version|help>`, plus `check-config [FILE]`.
//!
//! As with Go's flag package, long flags also work with one dash (`-config`), values may follow
//! `=`, and boolean flags accept `=true`/`=false`. Unlike the reference, global flags are also
//! accepted after the command (`mender-connect daemon --debug` was "flag provided but not defined").

use std::path::{Path, PathBuf};

use crate::config::{Config, DEFAULT_CONFIG_FILE, DEFAULT_FALLBACK_CONFIG_FILE};
use crate::ops::logging::{self, Verbosity};

use crate::ops::VERSION;

/// The toolchain, as the reference prints Go's (`go1.19.8`): `rust1.85.0`.
const TOOLCHAIN: &str = env!("MENDER_CONNECT_TOOLCHAIN");

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    pub(crate) config: PathBuf,
    pub(crate) fallback_config: PathBuf,
    pub(crate) verbosity: Verbosity,
    pub(crate) command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Daemon,
    Version,
    /// `--version`/`-v`: urfave's own format.
    VersionFlag,
    /// Validate the configuration; with a file, only that file.
    CheckConfig(Option<PathBuf>),
    /// Help for the app (`None`) or for a command.
    Help(Option<String>),
    /// `status`: the running daemon's state, over its control socket.
    Status(ControlArgs),
    /// `sessions [list]` / `sessions kill <id>`.
    Sessions(ControlArgs, SessionsAction),
}

/// Options of the commands that talk to the running daemon.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ControlArgs {
    /// `--socket PATH`; otherwise `ControlSocket` from the configuration.
    pub(crate) socket: Option<PathBuf>,
    /// `--json`.
    pub(crate) json: bool,
}

/// What `sessions` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionsAction {
    /// List the sessions.
    List,
    /// End one.
    Kill(String),
}

/// A command line the parser rejects, with the exit code of the reference for that case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsageError {
    pub(crate) message: String,
    pub(crate) code: i32,
    /// Print the app help after the message (as urfave does).
    pub(crate) show_help: bool,
}

fn usage(message: String) -> UsageError {
    UsageError { message, code: 1, show_help: true }
}

/// Parses the arguments after the program name.
pub(crate) fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Invocation, UsageError> {
    let mut inv = Invocation {
        config: PathBuf::from(DEFAULT_CONFIG_FILE),
        fallback_config: PathBuf::from(DEFAULT_FALLBACK_CONFIG_FILE),
        verbosity: Verbosity::Info,
        command: Command::Help(None),
    };
    let (mut debug, mut trace) = (false, false);
    let mut command: Option<String> = None;
    let mut positional: Vec<String> = Vec::new();
    let mut help = false;
    let mut control = ControlArgs::default();
    let mut args = args.into_iter();
    let mut only_positional = false;
    while let Some(arg) = args.next() {
        if only_positional || !arg.starts_with('-') || arg == "-" {
            if command.is_none() {
                command = Some(arg);
            } else {
                positional.push(arg);
            }
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        let body = arg.strip_prefix("--").unwrap_or_else(|| &arg[1..]);
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let mut value = |flag: &str| -> Result<String, UsageError> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) => Ok(v),
                None => Err(usage(format!("flag needs an argument: -{flag}"))),
            }
        };
        let boolean = |v: &Option<String>| -> Result<bool, UsageError> {
            match v.as_deref() {
                None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => Ok(true),
                Some("false" | "0" | "f" | "F" | "FALSE" | "False") => Ok(false),
                Some(other) => Err(usage(format!("invalid boolean value {other:?} for -{name}"))),
            }
        };
        match name {
            "config" | "c" => inv.config = PathBuf::from(value(name)?),
            "fallback-config" | "b" => inv.fallback_config = PathBuf::from(value(name)?),
            "debug" | "d" => debug = boolean(&inline)?,
            "trace" | "dd" => trace = boolean(&inline)?,
            "help" | "h" => help = boolean(&inline)?,
            "socket" => control.socket = Some(PathBuf::from(value(name)?)),
            "json" => control.json = boolean(&inline)?,
            "version" | "v" => {
                if boolean(&inline)? && command.is_none() {
                    inv.command = Command::VersionFlag;
                    return Ok(inv);
                }
            }
            _ => return Err(usage(format!("flag provided but not defined: -{name}"))),
        }
    }
    inv.verbosity = if trace {
        Verbosity::Trace
    } else if debug {
        Verbosity::Debug
    } else {
        Verbosity::Info
    };
    inv.command = match command.as_deref() {
        None => Command::Help(None),
        Some(_) if help => Command::Help(command.clone()),
        Some("daemon") => Command::Daemon,
        Some("version") => Command::Version,
        Some("check-config") => {
            if positional.len() > 1 {
                return Err(usage("check-config takes at most one FILE".into()));
            }
            Command::CheckConfig(positional.pop().map(PathBuf::from))
        }
        Some("help" | "h") => Command::Help(positional.first().cloned()),
        Some("status") => {
            if !positional.is_empty() {
                return Err(usage("status takes no arguments".into()));
            }
            Command::Status(control)
        }
        Some("sessions") => {
            let action = match positional.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                [] | ["list"] => SessionsAction::List,
                ["kill", id] => SessionsAction::Kill((*id).to_owned()),
                _ => return Err(usage("usage: mender-connect sessions [list | kill ID]".into())),
            };
            Command::Sessions(control, action)
        }
        Some(other) => {
            return Err(UsageError {
                message: format!("No help topic for '{other}'"),
                code: 3,
                show_help: false,
            });
        }
    };
    if help && command.is_none() {
        inv.command = Command::Help(None);
    }
    Ok(inv)
}

fn app_help() -> String {
    format!(
        "NAME:
   mender-connect - manage and start the Mender Connect service.

USAGE:
   mender-connect [global options] command [command options] [arguments...]

VERSION:
   {VERSION}

COMMANDS:
   daemon        Start the client as a background service.
   version       Show the version and runtime information of the binary build
   check-config  Check the configuration (or FILE alone) and print its warnings; exit 1 if invalid
   status        Show the running daemon's connection, sessions and counters [--json] [--socket PATH]
   sessions      List sessions, or end one: sessions [list | kill ID] [--json] [--socket PATH]
   help, h       Shows a list of commands or help for one command

GLOBAL OPTIONS:
   --config FILE, -c FILE           Configuration FILE path. (default: \"{DEFAULT_CONFIG_FILE}\")
   --fallback-config FILE, -b FILE  Fallback configuration FILE path. (default: \"{DEFAULT_FALLBACK_CONFIG_FILE}\")
   --debug, -d                      Set the logging level to debug (default: false)
   --trace, --dd                    Set the logging level to trace (default: false)
   --help, -h                       show help (default: false)
   --version, -v                    print the version (default: false)
"
    )
}

fn command_help(name: &str) -> Option<String> {
    let (usage, args) = match name {
        "daemon" => ("Start the client as a background service.", ""),
        "version" => ("Show the version and runtime information of the binary build", ""),
        "check-config" => {
            ("Check the configuration (or FILE alone) and print its warnings; exit 1 if invalid", " [FILE]")
        }
        "status" => {
            ("Show the running daemon's connection, sessions and counters", " [--json] [--socket PATH]")
        }
        "sessions" => (
            "List sessions, or end one (a shell is stopped as a server stop would)",
            " [list | kill ID] [--json] [--socket PATH]",
        ),
        _ => return None,
    };
    Some(format!(
        "NAME:
   mender-connect {name} - {usage}

USAGE:
   mender-connect {name} [command options]{args}

OPTIONS:
   --help, -h  show help (default: false)
"
    ))
}

fn version_line() -> String {
    format!("{VERSION}\truntime: {TOOLCHAIN}")
}

/// Parses `std::env::args()`, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let inv = match parse(std::env::args().skip(1)) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("{}", e.message);
            if e.show_help {
                eprintln!();
                eprint!("{}", app_help());
            }
            return e.code;
        }
    };
    match inv.command {
        Command::Help(None) => {
            print!("{}", app_help());
            0
        }
        Command::Help(Some(name)) => match command_help(&name) {
            Some(text) => {
                print!("{text}");
                0
            }
            None => {
                eprintln!("No help topic for '{name}'");
                3
            }
        },
        Command::Version => {
            println!("{}", version_line());
            0
        }
        Command::VersionFlag => {
            println!("mender-connect version {}", version_line());
            0
        }
        Command::CheckConfig(file) => check_config(&inv.config, &inv.fallback_config, file.as_deref()),
        Command::Status(args) => {
            let socket = control_socket(&args, &inv.config, &inv.fallback_config);
            crate::ops::status::client::status_command(&socket, args.json)
        }
        Command::Sessions(args, action) => {
            let socket = control_socket(&args, &inv.config, &inv.fallback_config);
            match action {
                SessionsAction::List => crate::ops::status::client::list_command(&socket, args.json),
                SessionsAction::Kill(id) => crate::ops::status::client::kill_command(&socket, &id, args.json),
            }
        }
        Command::Daemon => {
            logging::init(inv.verbosity);
            let loaded = match Config::load(&inv.config, &inv.fallback_config, crate::link::check) {
                Ok(l) => l,
                Err(e) => {
                    log::error!("{e}");
                    return 1;
                }
            };
            for f in &loaded.files {
                log::info!("Loaded configuration file: {}", f.display());
            }
            if loaded.files.is_empty() {
                log::info!("No configuration files present. Using defaults");
            }
            for w in &loaded.warnings {
                log::warn!("{w}");
            }
            if let Some(p) = loaded.config.chroot_problem() {
                log::warn!("{p}");
            }
            log::debug!("Verified configuration = {:?}", loaded.config);
            crate::os::runtime::raise_nofile_limit();
            crate::daemon::run(&loaded.config, None)
        }
    }
}

/// The control socket: `--socket`, else `ControlSocket` of the configuration the daemon
/// reads, else the default (a configuration that does not load cannot be the daemon's).
fn control_socket(args: &ControlArgs, primary: &Path, fallback: &Path) -> PathBuf {
    args.socket.clone().unwrap_or_else(|| {
        Config::load(primary, fallback, crate::link::check)
            .map(|l| l.config.control_socket)
            .unwrap_or_else(|_| PathBuf::from(crate::config::DEFAULT_CONTROL_SOCKET))
    })
}

/// `check-config`: the same loading and checks as `daemon`, and a `Chroot` that is not there;
/// every warning and the verdict on stdout, every error on stderr, each naming its file. With
/// FILE, only that file is read and it must exist.
fn check_config(primary: &Path, fallback: &Path, file: Option<&Path>) -> i32 {
    let report = match file {
        Some(f) => match std::fs::metadata(f) {
            Ok(_) => crate::config::check::check(&[f], crate::link::check),
            Err(e) => {
                eprintln!("error: cannot read configuration file {}: {e}", f.display());
                return 1;
            }
        },
        None => crate::config::check::check(&[fallback, primary], crate::link::check),
    };
    for w in &report.warnings {
        println!("warning: {w}");
    }
    if !report.ok() {
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        let n = report.errors.len();
        eprintln!("configuration invalid ({n} error{})", if n == 1 { "" } else { "s" });
        return 1;
    }
    if report.files.is_empty() {
        println!(
            "note: neither {} nor {} exists; the defaults are used",
            primary.display(),
            fallback.display()
        );
    }
    let files: Vec<String> = report.files.iter().map(|p| p.display().to_string()).collect();
    println!("configuration OK ({})", if files.is_empty() { "defaults".into() } else { files.join(", ") });
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation, UsageError> {
        parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults_match_the_reference() {
        let inv = p(&["daemon"]).unwrap();
        assert_eq!(inv.config, PathBuf::from("/etc/mender/mender-connect.conf"));
        assert_eq!(inv.fallback_config, PathBuf::from("/var/lib/mender/mender-connect.conf"));
        assert_eq!(inv.verbosity, Verbosity::Info);
        assert_eq!(inv.command, Command::Daemon);
    }

    #[test]
    fn flag_spellings_of_go_flag_package() {
        for args in [
            &["--config", "/a", "daemon"][..],
            &["-config", "/a", "daemon"],
            &["-c", "/a", "daemon"],
            &["--config=/a", "daemon"],
            &["-c=/a", "daemon"],
            &["daemon", "--config", "/a"],
        ] {
            let inv = p(args).unwrap();
            assert_eq!(inv.config, PathBuf::from("/a"), "{args:?}");
            assert_eq!(inv.command, Command::Daemon);
        }
        assert_eq!(p(&["-b", "/f", "daemon"]).unwrap().fallback_config, PathBuf::from("/f"));
        assert_eq!(p(&["--fallback-config=/f", "daemon"]).unwrap().fallback_config, PathBuf::from("/f"));
    }

    #[test]
    fn verbosity_flags() {
        assert_eq!(p(&["-d", "daemon"]).unwrap().verbosity, Verbosity::Debug);
        assert_eq!(p(&["--debug", "daemon"]).unwrap().verbosity, Verbosity::Debug);
        assert_eq!(p(&["--dd", "daemon"]).unwrap().verbosity, Verbosity::Trace);
        assert_eq!(p(&["-trace", "-d", "daemon"]).unwrap().verbosity, Verbosity::Trace);
        assert_eq!(p(&["--debug=false", "daemon"]).unwrap().verbosity, Verbosity::Info);
        assert!(p(&["--debug=maybe", "daemon"]).is_err());
    }

    #[test]
    fn commands_and_errors() {
        assert_eq!(p(&[]).unwrap().command, Command::Help(None));
        assert_eq!(p(&["version"]).unwrap().command, Command::Version);
        assert_eq!(p(&["-v"]).unwrap().command, Command::VersionFlag);
        assert_eq!(p(&["help", "daemon"]).unwrap().command, Command::Help(Some("daemon".into())));
        assert_eq!(p(&["daemon", "-h"]).unwrap().command, Command::Help(Some("daemon".into())));
        assert_eq!(p(&["check-config"]).unwrap().command, Command::CheckConfig(None));
        assert_eq!(
            p(&["check-config", "/x.conf"]).unwrap().command,
            Command::CheckConfig(Some(PathBuf::from("/x.conf")))
        );
        let e = p(&["foo"]).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (3, "No help topic for 'foo'"));
        let e = p(&["--bogus", "daemon"]).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (1, "flag provided but not defined: -bogus"));
        assert_eq!(p(&["status"]).unwrap().command, Command::Status(ControlArgs::default()));
        assert_eq!(
            p(&["status", "--json", "--socket", "/s"]).unwrap().command,
            Command::Status(ControlArgs { socket: Some(PathBuf::from("/s")), json: true })
        );
        assert_eq!(
            p(&["sessions", "kill", "abc"]).unwrap().command,
            Command::Sessions(ControlArgs::default(), SessionsAction::Kill("abc".into()))
        );
        assert_eq!(
            p(&["sessions"]).unwrap().command,
            Command::Sessions(ControlArgs::default(), SessionsAction::List)
        );
        assert!(p(&["sessions", "kill"]).is_err());
        assert!(p(&["status", "extra"]).is_err());
        let e = p(&["daemon", "--config"]).unwrap_err();
        assert!(e.message.contains("needs an argument"), "{e:?}");
    }
}
