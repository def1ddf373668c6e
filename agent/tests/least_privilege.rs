//! Least privilege: the agent binary runs as an unprivileged service user with only the
//! capabilities a feature needs (util-linux `setpriv` sets uid, gid, groups, and the inheritable,
//! ambient and bounding capability sets the way systemd's `User=`, `AmbientCapabilities=` and
//! `CapabilityBoundingSet=` do). Shells still start as the configured `User` with CAP_SETUID and
//! CAP_SETGID, inherit no capability, and without those capabilities the agent answers with a
//! clear error instead of a shell as the wrong user. File transfer keeps the requested owner
//! with CAP_CHOWN and says why not without it.
//!
//! Needs root (to create the test users and drop to them); skipped with a message otherwise.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Agent, Conn, Proc, SOON, Server, TempDir, encode, number_after, workspace_bin};
use mender_connect_core::control::{self, Open};
use mender_connect_core::filetransfer::{self as ft, FtError, UploadRequest};
use mender_connect_core::frame::Prop;

/// The service user the agent runs as, and the user its shells run as.
const AGENT_USER: &str = "mc-lp-agent";
const SHELL_USER: &str = "mc-lp-shell";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Creates `name` unless it exists (idempotent; another test may race us); returns (uid, gid).
fn ensure_user(name: &str) -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok()).flatten()
    };
    // Bounded retries: 10 means /etc/passwd is locked by a parallel useradd.
    for _ in 0..50 {
        if id("-u").is_some() {
            break;
        }
        let st = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/bin/sh",
                name,
            ])
            .status()
            .expect("useradd (apt package passwd) must be installed");
        // 9: the name is taken (a parallel test created it).
        match st.code() {
            Some(0 | 9) => break,
            Some(10) => std::thread::sleep(std::time::Duration::from_millis(100)),
            _ => panic!("useradd {name} failed: {st}"),
        }
    }
    (id("-u").expect("uid"), id("-g").expect("gid"))
}

/// A private dbus-daemon that, unlike a session bus, lets every uid connect (the agent runs as
/// another user than the test and the auth service).
struct OpenBus {
    address: String,
    _proc: Proc,
}

/// Everyone may talk to everyone: the policy of a session bus, for any uid.
const OPEN_POLICY: &str = r#"<policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>"#;

/// The default policy of Debian's system bus (/usr/share/dbus-1/system.conf): method calls to
/// services are denied unless a policy file allows them.
const SYSTEM_POLICY: &str = r#"<policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
  </policy>"#;

/// What the Mender client's io.mender.AuthenticationManager.conf allows: root only.
const MENDER_AUTH_POLICY: &str = r#"<policy user="root">
    <allow own="io.mender.AuthenticationManager"/>
    <allow send_destination="io.mender.AuthenticationManager"/>
    <allow receive_sender="io.mender.AuthenticationManager"/>
  </policy>"#;

impl OpenBus {
    fn start(dir: &Path) -> Self {
        Self::with_policy(dir, OPEN_POLICY, None)
    }

    /// A bus with `policy` and, if given, a directory of policy files.
    fn with_policy(dir: &Path, policy: &str, include: Option<&Path>) -> Self {
        let conf = dir.join("bus.conf");
        let sock = dir.join("bus");
        let include =
            include.map(|d| format!("<includedir>{}</includedir>", d.display())).unwrap_or_default();
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  {policy}
  {include}
</busconfig>
"#,
                sock.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nosyslog", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (apt package dbus-daemon) must be installed");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address = line.trim().to_owned();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        Self { address, _proc: Proc(child) }
    }
}

/// `mender-test-auth` on the bus, handing out `url`.
fn auth_service(bus: &OpenBus, url: &str) -> Proc {
    let bin = workspace_bin("mender-test-auth", "mender-test-auth");
    let mut child = Command::new(bin)
        .args(["--bus", &bus.address, "--token", "T1", "--server-url", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref().map(str::trim), Some("ready"));
    Proc(child)
}

/// Starts the agent as `AGENT_USER` with exactly `caps` (e.g. `["setuid", "setgid"]`) in its
/// inheritable, ambient and bounding sets and no_new_privs set, as systemd does with the drop-in.
fn start_agent_as_service_user<S: AsRef<str>>(dir: &Path, bus: &OpenBus, config: &str, caps: &[S]) -> Agent {
    let (uid, gid) = ensure_user(AGENT_USER);
    // The unprivileged agent reads its configuration and nothing else of the test's.
    let conf = dir.join("mender-connect.conf");
    std::fs::write(&conf, config).unwrap();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let set = |prefix: &str| {
        let mut s = String::from(prefix);
        for c in caps {
            s.push_str(&format!(",+{}", c.as_ref()));
        }
        s
    };
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={}", set("-all")))
        .arg(format!("--ambient-caps={}", set("-all")))
        .arg(format!("--bounding-set={}", set("-all")))
        // NoNewPrivileges=yes of the drop-in.
        .arg("--no-new-privs")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_mender-connect"))
        .arg("--config")
        .arg(&conf)
        .arg("--fallback-config")
        .arg(dir.join("missing.conf"))
        .arg("--debug")
        .arg("daemon")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    Agent { proc: Proc(cmd.spawn().expect("setpriv (util-linux) must be installed")), dir: dir.to_path_buf() }
}

/// Status, uid and capability lines of the agent process.
fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim).unwrap_or("")
}

fn support(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support").join(name)
}

const DROP_IN: &str = "mender-connect.service.d/least-privilege.conf";

/// The capabilities the shipped least-privilege drop-in grants, as setpriv names them.
fn shipped_caps() -> Vec<String> {
    let unit = std::fs::read_to_string(support(DROP_IN)).unwrap();
    let set = |key: &str| -> Vec<String> {
        let line =
            unit.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in {DROP_IN}"));
        let mut v: Vec<String> =
            line.split_whitespace().map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase()).collect();
        v.sort();
        v
    };
    let ambient = set("AmbientCapabilities=");
    assert_eq!(ambient, set("CapabilityBoundingSet="), "the drop-in's ambient and bounding sets differ");
    ambient
}

/// The /proc/<pid>/status mask of capabilities named as setpriv names them.
fn cap_mask(caps: &[String]) -> String {
    let bit = |c: &str| match c {
        "chown" => 0,
        "dac_override" => 1,
        "dac_read_search" => 2,
        "fowner" => 3,
        "fsetid" => 4,
        "kill" => 5,
        "setgid" => 6,
        "setuid" => 7,
        other => panic!("unexpected capability {other}"),
    };
    format!("{:016x}", caps.iter().fold(0u64, |m, c| m | 1u64 << bit(c)))
}

/// A temporary directory the service user can read (the bus socket and config live there).
fn shared_dir(tag: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new(tag);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

struct Setup {
    agent: Agent,
    _auth: Proc,
    server: Server,
    _bus: OpenBus,
    _dir: TempDir,
}

async fn setup<S: AsRef<str>>(tag: &str, extra: &str, caps: &[S]) -> Setup {
    let dir = shared_dir(tag);
    let bus = OpenBus::start(dir.path());
    let server = Server::bind().await;
    let auth = auth_service(&bus, &server.url());
    ensure_user(SHELL_USER);
    let mut config = format!(r#"{{"ShellCommand":"/bin/sh","ShellArguments":[],"User":"{SHELL_USER}""#);
    if !extra.is_empty() {
        config.push(',');
        config.push_str(extra);
    }
    config.push('}');
    let agent = start_agent_as_service_user(dir.path(), &bus, &config, caps);
    Setup { agent, _auth: auth, server, _bus: bus, _dir: dir }
}

/// Asks for a shell; `Ok` if started, else the agent's error text.
async fn new_shell(conn: &mut Conn, sid: &str) -> Result<(), String> {
    conn.new_shell(sid, "u1", None).await;
    let m = conn.recv_until("new reply", |m| m.typ == "new" && m.sid == sid).await;
    if m.status == Some(1) { Ok(()) } else { Err(m.body_str()) }
}

/// Runs `cmd` in shell `sid`, returns the number printed after `KEY=`.
async fn shell_number(conn: &mut Conn, sid: &str, cmd: &str, key: &str) -> u64 {
    conn.shell_input(sid, "u1", format!("{cmd}\n").as_bytes()).await;
    let out = conn.output_until_match(sid, |o| number_after(o, key).is_some()).await;
    u64::from(number_after(&out, key).unwrap())
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("\n*** SKIPPED {test}: needs root to create users and drop privileges ***\n");
    true
}

#[test]
fn shells_start_as_the_configured_user_with_only_the_shipped_capabilities() {
    if skip_unless_root("shells_start_as_the_configured_user_with_only_the_shipped_capabilities") {
        return;
    }
    smol::block_on(async {
        let caps = shipped_caps();
        let s = setup("lp-shell", "", &caps).await;
        let mut conn = s.server.accept(SOON).await;
        let (agent_uid, _) = ensure_user(AGENT_USER);
        let (shell_uid, shell_gid) = ensure_user(SHELL_USER);

        // The agent really is unprivileged: its uid and exactly the two capabilities.
        let st = proc_status(s.agent.pid());
        let uids: Vec<&str> = status_field(&st, "Uid:").split_whitespace().collect();
        assert_eq!(uids, vec![agent_uid.to_string(); 4], "{st}");
        let want_caps = cap_mask(&caps);
        assert_eq!(status_field(&st, "CapEff:"), want_caps, "{st}");
        assert_eq!(status_field(&st, "CapBnd:"), want_caps, "{st}");

        new_shell(&mut conn, "s1").await.unwrap_or_else(|e| panic!("no shell: {e}\nlog:\n{}", s.agent.log()));
        assert_eq!(shell_number(&mut conn, "s1", "echo UID=$(id -u)", "UID=").await, u64::from(shell_uid));
        assert_eq!(shell_number(&mut conn, "s1", "echo GID=$(id -g)", "GID=").await, u64::from(shell_gid));
        // Not one capability reaches the user's shell (ambient ones would survive exec).
        // The quotes keep the echoed command line from matching.
        let caps = "for k in CapInh CapPrm CapEff CapAmb; do v=$(sed -n \"s/^$k:[[:space:]]*//p\" /proc/$$/status); \
                    echo \"$k=$((0x$v))\"; done; echo CAPS-DONE''=1";
        conn.shell_input("s1", "u1", format!("{caps}\n").as_bytes()).await;
        let out = conn.output_until_match("s1", |o| number_after(o, "CAPS-DONE=").is_some()).await;
        for k in ["CapInh=", "CapPrm=", "CapEff=", "CapAmb="] {
            assert_eq!(number_after(&out, k), Some(0), "{k} in the shell: {out}");
        }

        // Stopping works on another user's processes: the shell and a background job of its
        // session go.
        let shell = shell_number(&mut conn, "s1", "echo PID=$$", "PID=").await as u32;
        let bg = shell_number(&mut conn, "s1", "sleep 600 & echo BG=$!", "BG=").await as u32;
        conn.send(encode(1, "stop", "s1", &[Prop::str("user_id", "u1")], b"")).await;
        let m = conn.recv_until("stop reply", |m| m.typ == "stop" && m.sid == "s1").await;
        assert_eq!(m.status, Some(1), "{}", m.body_str());
        for pid in [shell, bg] {
            common::eventually("the stopped shell's processes are gone", || !common::process_alive(pid));
        }
        common::eventually("no child left", || s.agent.children().is_empty());
    });
}

#[test]
fn without_the_capabilities_the_agent_refuses_instead_of_running_the_wrong_user() {
    if skip_unless_root("without_the_capabilities_the_agent_refuses_instead_of_running_the_wrong_user") {
        return;
    }
    let (agent_uid, _) = ensure_user(AGENT_USER);
    let (shell_uid, _) = ensure_user(SHELL_USER);
    // Without CAP_KILL the shell could be started but never stopped: refused as well.
    for (caps, missing) in
        [(&[][..], "CAP_SETUID, CAP_SETGID, CAP_KILL"), (&["setuid", "setgid"][..], "CAP_KILL")]
    {
        smol::block_on(async {
            let s = setup("lp-nocaps", "", caps).await;
            let mut conn = s.server.accept(SOON).await;
            let e = new_shell(&mut conn, "s1").await.expect_err("a shell started without the capabilities");
            assert_eq!(
                e,
                format!(
                    "failed to start shell: cannot start a shell as user {SHELL_USER} (uid {shell_uid}): mender-connect \
                     runs as uid {agent_uid}, not root, and lacks {missing}"
                )
            );
            assert!(s.agent.children().is_empty(), "a process was started anyway");
            // The agent keeps serving.
            conn.send(encode(0xFFFF, "ping", "p1", &[], b"")).await;
            let m = conn.recv_until("pong", |m| m.typ == "pong").await;
            assert_eq!(m.sid, "p1");
        });
    }
}

async fn upload_as(conn: &mut Conn, sid: &str, path: &str, uid: u32, gid: u32) -> Result<(), String> {
    let mut buf = vec![0u8; 1024];
    let n = control::encode_open_frame(&mut buf, sid, &Open::new(&[1]).unwrap()).unwrap();
    conn.send(buf[..n].to_vec()).await;
    conn.recv_until("accept", |m| m.proto == 0xFFFF && m.sid == sid).await;
    let req = UploadRequest {
        path: Some(path),
        uid: Some(uid),
        gid: Some(gid),
        mode: Some(0o640),
        ..Default::default()
    };
    let mut body = vec![0u8; 1024];
    let n = req.encode(&mut body).unwrap();
    let err = |m: &common::Msg| FtError::decode(&m.body).ok().and_then(|e| e.err).unwrap_or("").to_owned();
    conn.send(encode(2, ft::PUT_FILE, sid, &[], &body[..n])).await;
    let m = conn.recv_until("ft reply", |m| m.proto == 2 && m.sid == sid).await;
    if m.typ == ft::ERROR {
        return Err(err(&m));
    }
    // The agent acks every 10th chunk and the EOF chunk: one reply (ack or error) for both.
    for (off, data) in [(0i64, &b"owned"[..]), (5, &[][..])] {
        conn.send(encode(2, ft::FILE_CHUNK, sid, &[Prop::int64("offset", off)], data)).await;
    }
    let m = conn.recv_until("ft reply", |m| m.proto == 2 && m.sid == sid).await;
    if m.typ == ft::ERROR { Err(err(&m)) } else { Ok(()) }
}

#[test]
fn file_transfer_keeps_the_owner_only_with_cap_chown_and_cap_fowner() {
    if skip_unless_root("file_transfer_keeps_the_owner_only_with_cap_chown_and_cap_fowner") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    smol::block_on(async {
        let (agent_uid, agent_gid) = ensure_user(AGENT_USER);
        let (shell_uid, shell_gid) = ensure_user(SHELL_USER);
        // A directory the service user may write to.
        let files = TempDir::new("lp-ft-files");
        std::os::unix::fs::chown(files.path(), Some(agent_uid), Some(agent_gid)).unwrap();

        let s = setup("lp-ft", "", &shipped_caps()).await;
        let mut conn = s.server.accept(SOON).await;
        let target = files.path().join("kept").to_string_lossy().into_owned();
        upload_as(&mut conn, "f1", &target, shell_uid, shell_gid)
            .await
            .unwrap_or_else(|e| panic!("upload failed: {e}\nlog:\n{}", s.agent.log()));
        let md = std::fs::metadata(&target).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (shell_uid, shell_gid, 0o640));
        drop(conn);
        drop(s);

        // CAP_FOWNER: the upload, once given away by chown, is linked into place, and with
        // fs.protected_hardlinks only the owner (or CAP_FOWNER) may link a file it cannot read.
        let no_fowner: Vec<String> = shipped_caps().into_iter().filter(|c| c != "fowner").collect();
        let s = setup("lp-ft-nofowner", "", &no_fowner).await;
        let mut conn = s.server.accept(SOON).await;
        let target = files.path().join("nofowner").to_string_lossy().into_owned();
        let r = upload_as(&mut conn, "f3", &target, shell_uid, shell_gid).await;
        let protected = std::fs::read_to_string("/proc/sys/fs/protected_hardlinks").unwrap_or_default();
        if protected.trim() == "1" {
            assert_eq!(
                r,
                Err(format!("failed to commit uploaded file: rename {target}: operation not permitted"))
            );
            let left: Vec<_> =
                std::fs::read_dir(files.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(left, vec![std::ffi::OsString::from("kept")], "partial or temporary files left");
        } else {
            assert_eq!(r, Ok(()), "fs.protected_hardlinks is off: linking needs no CAP_FOWNER");
        }
        drop(conn);
        drop(s);

        let s = setup("lp-ft-nocaps", "", &["setuid", "setgid", "kill"]).await;
        let mut conn = s.server.accept(SOON).await;
        let target = files.path().join("refused").to_string_lossy().into_owned();
        let e = upload_as(&mut conn, "f2", &target, shell_uid, shell_gid)
            .await
            .expect_err("chown without CAP_CHOWN");
        assert_eq!(e, format!("failed to set file owner: chown {target}: operation not permitted"));
        assert!(!Path::new(&target).exists(), "a file with the wrong owner was left behind");
    });
}

#[test]
fn shipped_dbus_policy_lets_the_service_user_get_the_token() {
    if skip_unless_root("shipped_dbus_policy_lets_the_service_user_get_the_token") {
        return;
    }
    let (agent_uid, _) = ensure_user(AGENT_USER);
    let policy = std::fs::read_to_string(support("mender-connect-dbus.conf")).unwrap();
    assert!(policy.contains(r#"<policy user="mender-connect">"#), "{policy}");
    for shipped in [true, false] {
        smol::block_on(async {
            let dir = shared_dir("lp-dbus");
            let policies = dir.path().join("system.d");
            std::fs::create_dir(&policies).unwrap();
            std::fs::write(
                policies.join("io.mender.AuthenticationManager.conf"),
                format!("<busconfig>{MENDER_AUTH_POLICY}</busconfig>"),
            )
            .unwrap();
            if shipped {
                let ours = policy.replace(r#"user="mender-connect""#, &format!(r#"user="{AGENT_USER}""#));
                std::fs::write(policies.join("mender-connect.conf"), ours).unwrap();
            }
            let bus = OpenBus::with_policy(dir.path(), SYSTEM_POLICY, Some(&policies));
            let server = Server::bind().await;
            let _auth = auth_service(&bus, &server.url());
            let config = r#"{"ShellCommand":"/bin/sh","User":"nobody"}"#;
            let agent = start_agent_as_service_user(dir.path(), &bus, config, &shipped_caps());
            if shipped {
                let conn = server.accept(SOON).await;
                assert_eq!(conn.authorization, "Bearer T1");
            } else {
                // Root-only, as the Mender client ships it: the service user is turned away.
                common::eventually("the agent reports the denied token request", || {
                    agent.log().contains("org.freedesktop.DBus.Error.AccessDenied")
                });
            }
            assert!(proc_status(agent.pid()).contains(&format!("Uid:\t{agent_uid}\t")));
        });
    }
}

#[test]
fn hardened_unit_verifies_and_exposes_less_than_the_default() {
    let unit = std::fs::read_to_string(support("mender-connect.service")).unwrap();
    let drop_in = std::fs::read_to_string(support(DROP_IN)).unwrap();
    assert!(unit.lines().any(|l| l == "User=root"), "the default unit stays a drop-in for the Go one");
    assert!(drop_in.lines().any(|l| l == "User=mender-connect"), "{drop_in}");
    assert!(drop_in.lines().any(|l| l == "NoNewPrivileges=yes"), "{drop_in}");
    let sysusers = std::fs::read_to_string(support("mender-connect.sysusers.conf")).unwrap();
    assert!(sysusers.lines().any(|l| l.starts_with("u mender-connect ")), "{sysusers}");
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("\n*** SKIPPED systemd-analyze checks: not installed (apt-get install systemd) ***\n");
        return;
    }
    let dir = TempDir::new("lp-unit");
    let exposure = |with_drop_in: bool| -> f64 {
        let unit_dir = dir.path().join(if with_drop_in { "hardened" } else { "default" });
        std::fs::create_dir_all(unit_dir.join("mender-connect.service.d")).unwrap();
        let path = unit_dir.join("mender-connect.service");
        // verify checks that ExecStart exists: point it at the binary under test.
        std::fs::write(&path, unit.replace("/usr/bin/mender-connect", env!("CARGO_BIN_EXE_mender-connect")))
            .unwrap();
        if with_drop_in {
            std::fs::write(unit_dir.join(DROP_IN), &drop_in).unwrap();
        }
        let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "verify: {stderr}");
        assert!(!stderr.contains("Unknown key") && !stderr.contains("Failed to parse"), "verify: {stderr}");
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains("Unknown key"), "security: {text}");
        let level = text
            .split("Overall exposure level for mender-connect.service:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok());
        level.unwrap_or_else(|| panic!("no exposure level in: {text}"))
    };
    let (default, hardened) = (exposure(false), exposure(true));
    println!("systemd-analyze security exposure: default unit {default}, with {DROP_IN} {hardened}");
    assert!(hardened < 5.0 && hardened < default, "default {default}, hardened {hardened}");
}
