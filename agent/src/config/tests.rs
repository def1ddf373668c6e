//! One test per key: default, accepted values, rejected values, warnings.

use super::*;

fn ok(json: &str) -> Loaded {
    Config::from_json_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn err(json: &str) -> String {
    match Config::from_json_str(json) {
        Ok(l) => panic!("{json} was accepted: {:?}", l.config),
        Err(e) => e.to_string(),
    }
}

fn warned(l: &Loaded, needle: &str) -> bool {
    l.warnings.iter().any(|w| w.contains(needle))
}

#[test]
fn empty_object_gives_reference_defaults() {
    let l = ok("{}");
    let c = &l.config;
    assert_eq!(c.shell_command, PathBuf::from("/bin/sh"));
    assert_eq!(c.shell_arguments, vec!["--login".to_owned()]);
    assert_eq!(c.user, "");
    assert_eq!(c.terminal, Terminal { disable: false, height: 40, width: 80 });
    assert_eq!(
        c.sessions,
        Sessions {
            stop_expired: true,
            expire_after: None,
            expire_after_idle: Some(Duration::from_secs(600)),
            max_per_user: 1
        }
    );
    assert_eq!(c.reconnect_interval, Duration::from_secs(5));
    assert!(!c.file_transfer.disable && !c.port_forward.disable && !c.mender_client.disable);
    assert!(!c.limits.enabled);
    assert_eq!(c.limits.file_transfer, FileTransferLimits::default());
    assert!(c.limits.file_transfer.preserve_mode && c.limits.file_transfer.preserve_owner);
    // Leaving ShellCommand out asks for the default: no warning. The reference warns also then.
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let l = ok(r#"{"ShellCommand":""}"#);
    assert!(warned(&l, "ShellCommand is empty, defaulting to /bin/sh"), "{:?}", l.warnings);
}

#[test]
fn null_document_and_null_values_leave_defaults() {
    assert_eq!(ok("null").config, ok("{}").config);
    let l = ok(r#"{"ShellCommand":null,"Terminal":null,"Sessions":{"MaxPerUser":null}}"#);
    assert_eq!(l.config, ok("{}").config);
}

#[test]
fn shell_command_and_arguments() {
    let c = ok(r#"{"ShellCommand":"/bin/bash","ShellArguments":["-l","-i"]}"#).config;
    assert_eq!(c.shell_command, PathBuf::from("/bin/bash"));
    assert_eq!(c.shell_arguments, vec!["-l", "-i"]);
    // An explicit empty list means "no arguments", as Go distinguishes nil from empty.
    assert!(ok(r#"{"ShellArguments":[]}"#).config.shell_arguments.is_empty());
    assert!(err(r#"{"ShellCommand":5}"#).starts_with("ShellCommand: must be a string"));
    assert!(err(r#"{"ShellArguments":"--login"}"#).starts_with("ShellArguments: must be an array"));
    assert!(err(r#"{"ShellArguments":["-l",1]}"#).starts_with("ShellArguments: must be an array of strings"));
}

#[test]
fn user() {
    assert_eq!(ok(r#"{"User":"nobody"}"#).config.user, "nobody");
    assert!(err(r#"{"User":["root"]}"#).starts_with("User: must be a string"));
}

#[test]
fn keys_match_case_insensitively_like_go() {
    let c = ok(r#"{"shellcommand":"/bin/bash","USER":"root","terminal":{"width":100}}"#).config;
    assert_eq!(c.shell_command, PathBuf::from("/bin/bash"));
    assert_eq!(c.user, "root");
    assert_eq!(c.terminal.width, 100);
}

#[test]
fn terminal() {
    let c = ok(r#"{"Terminal":{"Width":132,"Height":50}}"#).config;
    assert_eq!((c.terminal.height, c.terminal.width), (50, 132));
    // 0 means default.
    let c = ok(r#"{"Terminal":{"Width":0,"Height":0}}"#).config;
    assert_eq!((c.terminal.height, c.terminal.width), (40, 80));
    assert!(ok(r#"{"Terminal":{"Disable":true}}"#).config.terminal.disable);
    for bad in
        [r#"{"Terminal":{"Width":-1}}"#, r#"{"Terminal":{"Width":65536}}"#, r#"{"Terminal":{"Width":1.5}}"#]
    {
        let e = err(bad);
        assert!(e.starts_with("Terminal.Width: must be a whole number from 0 to 65535 (uint16)"), "{e}");
    }
    assert!(err(r#"{"Terminal":{"Height":"40"}}"#).starts_with("Terminal.Height:"));
    assert!(err(r#"{"Terminal":{"Disable":"yes"}}"#).starts_with("Terminal.Disable: must be true or false"));
    assert!(err(r#"{"Terminal":[]}"#).starts_with("Terminal: must be an object"));
    let l = ok(r#"{"Terminal":{"Disable":true,"Width":100}}"#);
    assert!(warned(&l, "Terminal.Width has no effect: the remote terminal is disabled"), "{:?}", l.warnings);
}

#[test]
fn sessions() {
    let s = ok(r#"{"Sessions":{"StopExpired":true,"ExpireAfter":600}}"#).config.sessions;
    assert_eq!(s.expire_after, Some(Duration::from_secs(600)));
    assert_eq!(s.expire_after_idle, None);
    let s = ok(r#"{"Sessions":{"StopExpired":true,"ExpireAfterIdle":300}}"#).config.sessions;
    assert_eq!((s.expire_after, s.expire_after_idle), (None, Some(Duration::from_secs(300))));
    assert_eq!(ok(r#"{"Sessions":{"MaxPerUser":4}}"#).config.sessions.max_per_user, 4);
    assert_eq!(ok(r#"{"Sessions":{"MaxPerUser":0}}"#).config.sessions.max_per_user, 1);
    assert!(err(r#"{"Sessions":{"ExpireAfter":4294967296}}"#).contains("(uint32)"));
    assert!(err(r#"{"Sessions":{"StopExpired":1}}"#).starts_with("Sessions.StopExpired:"));
}

/// mender-connect 3.0.0 `config/config.go` `applyDefaults`: `StopExpired` starts true (set
/// before the files are decoded, so only an explicit `false` turns it off), and
/// `if c.Sessions.ExpireAfter == 0 && c.Sessions.ExpireAfterIdle == 0 { ExpireAfterIdle =
/// DefaultExpireAfterIdle }` (600) inside the `StopExpired` branch. 2.x had no expiry here.
#[test]
fn three_point_o_expiry_defaults() {
    let s = |json: &str| ok(json).config.sessions;
    let idle = |n: u64| Some(Duration::from_secs(n));
    // Neither key: 10 minutes idle. Both 0 counts as neither (Go's zero values).
    for json in [
        "{}",
        r#"{"Sessions":{}}"#,
        r#"{"Sessions":{"StopExpired":true}}"#,
        r#"{"Sessions":{"StopExpired":null}}"#,
        r#"{"Sessions":{"ExpireAfter":0,"ExpireAfterIdle":0}}"#,
    ] {
        let s = s(json);
        assert!(s.stop_expired, "{json}");
        assert_eq!((s.expire_after, s.expire_after_idle), (None, idle(600)), "{json}");
    }
    // A key set is used as is, without StopExpired in the file.
    assert_eq!(
        (
            s(r#"{"Sessions":{"ExpireAfter":30}}"#).expire_after,
            s(r#"{"Sessions":{"ExpireAfter":30}}"#).expire_after_idle
        ),
        (Some(Duration::from_secs(30)), None)
    );
    assert_eq!(s(r#"{"Sessions":{"ExpireAfterIdle":90}}"#).expire_after_idle, idle(90));
    // Explicitly off: nothing expires, as before.
    let off = s(r#"{"Sessions":{"StopExpired":false}}"#);
    assert_eq!((off.stop_expired, off.expire_after, off.expire_after_idle), (false, None, None));
    // Both keys without StopExpired (a 2.x file where they had no effect): 3.0 starts with a
    // warning and idle wins; so does ours, instead of refusing to start.
    let l = ok(r#"{"Sessions":{"ExpireAfter":600,"ExpireAfterIdle":60}}"#);
    assert_eq!((l.config.sessions.expire_after, l.config.sessions.expire_after_idle), (None, idle(60)));
    assert!(
        warned(&l, "Sessions.ExpireAfter has no effect: Sessions.ExpireAfterIdle is also set"),
        "{:?}",
        l.warnings
    );
}

#[test]
fn expiry_without_stop_expired_has_no_effect() {
    let l = ok(r#"{"Sessions":{"StopExpired":false,"ExpireAfter":600,"ExpireAfterIdle":60}}"#);
    assert_eq!((l.config.sessions.expire_after, l.config.sessions.expire_after_idle), (None, None));
    assert!(warned(&l, "Sessions.ExpireAfter has no effect: Sessions.StopExpired is false"));
    assert!(warned(&l, "Sessions.ExpireAfterIdle has no effect: Sessions.StopExpired is false"));
}

#[test]
fn expire_after_with_expire_after_idle_is_an_error() {
    let e = err(r#"{"Sessions":{"StopExpired":true,"ExpireAfter":600,"ExpireAfterIdle":60}}"#);
    assert!(e.starts_with("Sessions.ExpireAfter: cannot be combined with Sessions.ExpireAfterIdle"), "{e}");
}

#[test]
fn reconnect_max_interval() {
    let max = |json: &str| ok(json).config.reconnect_max_interval;
    assert_eq!(max("{}"), Duration::from_secs(60));
    assert_eq!(
        max(r#"{"ReconnectMaxIntervalSeconds":4,"ReconnectIntervalSeconds":1}"#),
        Duration::from_secs(4)
    );
    assert_eq!(max(r#"{"ReconnectMaxIntervalSeconds":3600}"#), Duration::from_secs(3600));
    // Unset, it is never below the interval.
    assert_eq!(max(r#"{"ReconnectIntervalSeconds":120}"#), Duration::from_secs(120));
    assert_eq!(max(r#"{"ReconnectMaxIntervalSeconds":5}"#), Duration::from_secs(5));
    let e = err(r#"{"ReconnectMaxIntervalSeconds":4}"#);
    assert!(e.starts_with("ReconnectMaxIntervalSeconds: 4 is less than ReconnectIntervalSeconds (5)"), "{e}");
    let e = err(r#"{"ReconnectMaxIntervalSeconds":3601}"#);
    assert!(e.starts_with("ReconnectMaxIntervalSeconds: must be a whole number from 0 to 3600"), "{e}");
    assert!(
        err(r#"{"ReconnectMaxIntervalSeconds":0}"#)
            .starts_with("ReconnectMaxIntervalSeconds: must be from 1 to 3600")
    );
    assert!(err(r#"{"ReconnectMaxIntervalSeconds":"60"}"#).starts_with("ReconnectMaxIntervalSeconds:"));
    assert!(!ok(r#"{"ReconnectMaxIntervalSeconds":60}"#).warnings.iter().any(|w| w.contains("Reconnect")));
}

#[test]
fn reconnect_interval() {
    assert_eq!(ok(r#"{"ReconnectIntervalSeconds":30}"#).config.reconnect_interval, Duration::from_secs(30));
    assert_eq!(ok(r#"{"ReconnectIntervalSeconds":0}"#).config.reconnect_interval, Duration::from_secs(5));
    let l = ok(r#"{"ReconnectIntervalSeconds":-3}"#);
    assert_eq!(l.config.reconnect_interval, Duration::from_secs(5));
    assert!(warned(&l, "ReconnectIntervalSeconds: -3 is negative"));
    assert!(err(r#"{"ReconnectIntervalSeconds":"5"}"#).starts_with("ReconnectIntervalSeconds:"));
}

#[test]
fn feature_switches() {
    let c = ok(
        r#"{"FileTransfer":{"Disable":true},"PortForward":{"Disable":true},"MenderClient":{"Disable":true}}"#,
    )
    .config;
    assert!(c.file_transfer.disable && c.port_forward.disable && c.mender_client.disable);
    let c = ok(r#"{"PortForward":{"Disable":true}}"#).config;
    assert!(!c.file_transfer.disable && c.port_forward.disable && !c.mender_client.disable);
    assert!(err(r#"{"MenderClient":{"Disable":"true"}}"#).starts_with("MenderClient.Disable:"));
    let l = ok(r#"{"PortForward":{"Enable":true}}"#);
    assert!(warned(&l, "unknown key \"PortForward.Enable\""));
}

#[test]
fn limits_file_transfer_values() {
    let c = ok(r#"{"Limits":{"Enabled":true,"FileTransfer":{
        "Chroot":"/var/lib/data","FollowSymLinks":true,"AllowOverwrite":true,
        "OwnerPut":"nobody","GroupPut":"nogroup","OwnerGet":["root","nobody"],"GroupGet":["root"],
        "Umask":"0027","MaxFileSize":1048576,"Counters":{"MaxBytesTxPerMinute":100,"MaxBytesRxPerMinute":200},
        "AllowSuid":true,"RegularFilesOnly":true}}}"#)
    .config;
    let ft = &c.limits.file_transfer;
    assert!(c.limits.enabled);
    assert_eq!(ft.chroot, Some(PathBuf::from("/var/lib/data")));
    assert!(ft.follow_symlinks && ft.allow_overwrite && ft.allow_suid && ft.regular_files_only);
    assert_eq!(ft.owner_put.as_deref(), Some("nobody"));
    assert_eq!(ft.group_put.as_deref(), Some("nogroup"));
    assert_eq!(ft.owner_get, vec!["root", "nobody"]);
    assert_eq!(ft.group_get, vec!["root"]);
    assert_eq!(ft.umask, Some(0o027));
    assert_eq!(ft.max_file_size, Some(1_048_576));
    assert_eq!(ft.counters.max_bytes_tx_per_minute, Some(100));
    assert_eq!(ft.counters.max_bytes_rx_per_minute, Some(200));
    // 0 means unlimited.
    let ft = ok(r#"{"Limits":{"Enabled":true,"FileTransfer":{"MaxFileSize":0,"Counters":{"MaxBytesTxPerMinute":0}}}}"#)
        .config
        .limits
        .file_transfer;
    assert_eq!((ft.max_file_size, ft.counters.max_bytes_tx_per_minute), (None, None));
}

#[test]
fn limits_rejections() {
    let e = err(r#"{"Limits":{"Enabled":true,"FileTransfer":{"Umask":"0899"}}}"#);
    assert!(e.starts_with("Limits.FileTransfer.Umask: \"0899\" is not an octal umask"), "{e}");
    assert!(err(r#"{"Limits":{"Enabled":true,"FileTransfer":{"Umask":"1777"}}}"#).contains("Umask"));
    assert!(
        err(r#"{"Limits":{"Enabled":true,"FileTransfer":{"Umask":22}}}"#)
            .starts_with("Limits.FileTransfer.Umask: must be a string")
    );
    let e = err(r#"{"Limits":{"Enabled":true,"FileTransfer":{"Chroot":"data"}}}"#);
    assert!(e.starts_with("Limits.FileTransfer.Chroot: \"data\" is not an absolute path"), "{e}");
    assert!(
        err(r#"{"Limits":{"FileTransfer":{"MaxFileSize":-1}}}"#)
            .starts_with("Limits.FileTransfer.MaxFileSize:")
    );
    assert!(
        err(r#"{"Limits":{"FileTransfer":{"OwnerGet":"root"}}}"#)
            .starts_with("Limits.FileTransfer.OwnerGet:")
    );
    assert!(
        err(r#"{"Limits":{"FileTransfer":{"Counters":{"MaxBytesRxPerMinute":true}}}}"#)
            .starts_with("Limits.FileTransfer.Counters.MaxBytesRxPerMinute:")
    );
    assert!(err(r#"{"Limits":{"Enabled":"yes"}}"#).starts_with("Limits.Enabled:"));
}

#[test]
fn limits_without_enabled_have_no_effect() {
    let l = ok(r#"{"Limits":{"FileTransfer":{"Chroot":"/data","MaxFileSize":10,"Umask":"bad"}}}"#);
    assert!(!l.config.limits.enabled);
    for key in ["Limits.FileTransfer.Chroot", "Limits.FileTransfer.MaxFileSize", "Limits.FileTransfer.Umask"]
    {
        assert!(
            warned(&l, &format!("{key} has no effect: Limits.Enabled is not true")),
            "{key}: {:?}",
            l.warnings
        );
    }
}

#[test]
fn preserve_flags_are_forced_true_like_the_reference() {
    let l = ok(r#"{"Limits":{"Enabled":true,"FileTransfer":{"PreserveMode":false,"PreserveOwner":false}}}"#);
    let ft = &l.config.limits.file_transfer;
    assert!(ft.preserve_mode && ft.preserve_owner);
    assert!(warned(&l, "Limits.FileTransfer.PreserveMode: false has no effect"));
    assert!(warned(&l, "Limits.FileTransfer.PreserveOwner: false has no effect"));
    let l = ok(r#"{"Limits":{"Enabled":true,"FileTransfer":{"PreserveGroup":true}}}"#);
    assert!(warned(
        &l,
        "unknown key \"Limits.FileTransfer.PreserveGroup\" (mender-connect has no such setting"
    ));
}

#[test]
fn unknown_keys_are_named() {
    let l = ok(
        r#"{"ShellComand":"/bin/bash","Sessions":{"MaxPerUsr":2},"Limits":{"FileTransfer":{"Chrot":"/x"}}}"#,
    );
    assert!(
        warned(&l, "unknown key \"ShellComand\" (ignored; did you mean \"ShellCommand\"?)"),
        "{:?}",
        l.warnings
    );
    assert!(warned(
        &l,
        "unknown key \"Sessions.MaxPerUsr\" (ignored; did you mean \"Sessions.MaxPerUser\"?)"
    ));
    assert!(warned(
        &l,
        "unknown key \"Limits.FileTransfer.Chrot\" (ignored; did you mean \"Limits.FileTransfer.Chroot\"?)"
    ));
    let l = ok(r#"{"Colour":"blue"}"#);
    assert_eq!(l.warnings, vec!["unknown key \"Colour\" (ignored)".to_owned()]);
}

#[test]
fn deprecated_keys_warn_like_the_reference() {
    let l = ok(r#"{"ServerURL":"https://x","Servers":[{"ServerURL":"https://y"}],"ClientProtocol":"https",
        "HttpsClient":{"Certificate":"/c"},"SkipVerify":true,"ServerCertificate":"/s"}"#);
    for key in ["ServerURL", "Servers", "ClientProtocol", "HttpsClient", "SkipVerify", "ServerCertificate"] {
        assert!(warned(&l, &format!("{key} field is deprecated, ignoring.")), "{key}: {:?}", l.warnings);
    }
    // The reference still decodes them, so a wrong type fails there too.
    assert!(err(r#"{"SkipVerify":"yes"}"#).starts_with("SkipVerify: has the wrong type"));
}

#[test]
fn syntax_errors_have_line_and_column() {
    match Config::from_json_str("{\n  \"User\": \"root\",\n  }\n") {
        Err(ConfigError::Syntax { line, column, message, .. }) => {
            assert_eq!((line, column), (3, 3), "{message}");
            assert!(message.contains("trailing comma"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match Config::from_json_str("{\"User\": \"root\"") {
        Err(e @ ConfigError::Syntax { .. }) => {
            assert!(e.to_string().starts_with("line 1, column 15: invalid JSON"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(err("[1]").starts_with("(top level): must be a JSON object"));
}

#[test]
fn umask_parser() {
    assert_eq!(parse_umask("022"), Some(0o22));
    assert_eq!(parse_umask("0"), Some(0));
    assert_eq!(parse_umask("777"), Some(0o777));
    assert_eq!(parse_umask("1000"), None);
    assert_eq!(parse_umask("0o22"), None);
    assert_eq!(parse_umask("-1"), None);
}

mod files {
    use super::super::*;
    use std::path::PathBuf;

    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("mcrs-config-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        fn file(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn primary_overrides_fallback_per_key_and_nested_objects_merge() {
        let d = Dir::new("merge");
        let fallback = d.file(
            "fallback.conf",
            r#"{"User":"root","ShellArguments":["-l","-x"],"Terminal":{"Width":100,"Height":30},"Sessions":{"MaxPerUser":3}}"#,
        );
        let primary = d.file(
            "primary.conf",
            r#"{"ShellCommand":"/bin/sh","ShellArguments":["-i"],"Terminal":{"Width":120}}"#,
        );
        let l = Config::load(&primary, &fallback, no_more_checks).unwrap_or_else(|e| panic!("{e}"));
        let c = &l.config;
        assert_eq!(c.user, "root");
        assert_eq!(c.shell_arguments, vec!["-i"]); // arrays replace
        assert_eq!((c.terminal.width, c.terminal.height), (120, 30)); // objects merge
        assert_eq!(c.sessions.max_per_user, 3);
        assert_eq!(l.files, vec![fallback, primary]);
    }

    #[test]
    fn either_file_may_be_missing() {
        let d = Dir::new("missing");
        let only = d.file("only.conf", r#"{"User":"root"}"#);
        let absent = d.0.join("absent.conf");
        assert_eq!(Config::load(&only, &absent, no_more_checks).unwrap().config.user, "root");
        assert_eq!(Config::load(&absent, &only, no_more_checks).unwrap().config.user, "root");
        // Neither: defaults, which then fail on the missing User like the reference.
        let e = Config::load(&absent, &d.0.join("absent2.conf"), no_more_checks).unwrap_err().to_string();
        assert!(e.starts_with("User: please provide a user"), "{e}");
    }

    #[test]
    fn errors_name_the_file() {
        let d = Dir::new("errors");
        let bad = d.file("bad.conf", "{\"User\": \"root\",\n\"Terminal\": {\"Width\": -2}}");
        let e = Config::load(&bad, &d.0.join("absent.conf"), no_more_checks).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: Terminal.Width: must be a whole number from 0 to 65535 (uint16), not -2",
                bad.display()
            )
        );
        let broken = d.file("broken.conf", "{\n\"User\": root}");
        let e = Config::load(&broken, &d.0.join("absent.conf"), no_more_checks).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2:9: invalid JSON", broken.display())), "{e}");
        // A directory exists but cannot be read as a file.
        let e = Config::load(&d.0, &d.0.join("absent.conf"), no_more_checks).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }
}

#[test]
fn transfer_window_and_port_forward_timeouts() {
    let c = ok("{}").config;
    assert_eq!(c.file_transfer_ack_window, 20);
    assert_eq!(c.port_forward_timeouts.connect, Duration::from_secs(30));
    assert_eq!(c.port_forward_timeouts.idle, Duration::from_secs(600));

    let l = ok(r#"{"FileTransfer":{"AckWindowChunks":64},
                   "PortForward":{"ConnectTimeoutSeconds":5,"idletimeoutseconds":90}}"#);
    assert!(!warned(&l, "FileTransfer") && !warned(&l, "PortForward"), "{:?}", l.warnings);
    assert_eq!(l.config.file_transfer_ack_window, 64);
    assert_eq!(
        l.config.port_forward_timeouts,
        PortForwardTimeouts { connect: Duration::from_secs(5), idle: Duration::from_secs(90) }
    );

    for (json, key) in [
        (r#"{"FileTransfer":{"AckWindowChunks":0}}"#, "FileTransfer.AckWindowChunks"),
        (r#"{"FileTransfer":{"AckWindowChunks":257}}"#, "FileTransfer.AckWindowChunks"),
        (r#"{"FileTransfer":{"AckWindowChunks":"8"}}"#, "FileTransfer.AckWindowChunks"),
        (r#"{"PortForward":{"ConnectTimeoutSeconds":0}}"#, "PortForward.ConnectTimeoutSeconds"),
        (r#"{"PortForward":{"IdleTimeoutSeconds":-1}}"#, "PortForward.IdleTimeoutSeconds"),
        (r#"{"PortForward":{"IdleTimeoutSeconds":86401}}"#, "PortForward.IdleTimeoutSeconds"),
    ] {
        let e = err(json);
        assert!(e.contains(key), "{json}: {e}");
    }

    let l = ok(r#"{"FileTransfer":{"Disable":true,"AckWindowChunks":8},
                   "PortForward":{"Disable":true,"IdleTimeoutSeconds":8}}"#);
    assert!(warned(&l, "FileTransfer.AckWindowChunks has no effect"), "{:?}", l.warnings);
    assert!(warned(&l, "PortForward timeouts have no effect"), "{:?}", l.warnings);

    let l = ok(r#"{"PortForward":{"ConnectTimeout":5}}"#);
    assert!(warned(&l, "PortForward.ConnectTimeout"), "{:?}", l.warnings);
}

#[test]
fn port_forward_connection_limits_are_validated() {
    let base = r#""ShellCommand":"/bin/sh","User":"root""#;
    let c = Config::from_json_str(&format!("{{{base}}}")).unwrap().config;
    assert_eq!((c.port_forward_limits.per_session, c.port_forward_limits.total), (16, 64));
    let c = Config::from_json_str(&format!(
        r#"{{{base},"PortForward":{{"MaxConnectionsPerSession":2,"MaxConnections":5}}}}"#
    ))
    .unwrap()
    .config;
    assert_eq!((c.port_forward_limits.per_session, c.port_forward_limits.total), (2, 5));
    for bad in [
        r#""MaxConnections":0"#,
        r#""MaxConnectionsPerSession":0"#,
        r#""MaxConnections":4097"#,
        r#""MaxConnections":"x""#,
    ] {
        let err = Config::from_json_str(&format!(r#"{{{base},"PortForward":{{{bad}}}}}"#)).unwrap_err();
        assert!(err.to_string().contains("PortForward.MaxConnections"), "{bad}: {err}");
    }
    let w = Config::from_json_str(&format!(
        r#"{{{base},"PortForward":{{"MaxConnectionsPerSession":9,"MaxConnections":3}}}}"#
    ))
    .unwrap()
    .warnings;
    assert!(w.iter().any(|w| w.contains("MaxConnectionsPerSession")), "{w:?}");
}
