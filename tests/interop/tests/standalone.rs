//! Standalone mode (issue 10) and TLS verification (issue 9): our agent authenticates itself as a
//! Mender device, with no D-Bus and no Mender client on the "device". Keys, CA and certificates
//! come from openssl; identities from an identity script as `mender-device-identity` prints them.
//!
//! - preauthorized RSA / EC P-256 / Ed25519 devices are accepted on first contact and their
//!   terminal works through mender-cli;
//! - a new device stays pending until accepted, then connects; when its token expires and the
//!   server drops the socket, it authenticates again by itself;
//! - TLS: an untrusted server certificate is refused (the system CA bundle, another CA), the configured
//!   CA is accepted, and so is anything with `SkipVerify`;
//! - `HTTPS_PROXY`: everything goes through an HTTP CONNECT proxy (the server's name resolves only
//!   there); `NO_PROXY` bypasses it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mender_connect_interop::agent::current_user;
use mender_connect_interop::binaries::WorkspaceBin;
use mender_connect_interop::cli::MenderCli;
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::error::IoContext;
use mender_connect_interop::http::Body;
use mender_connect_interop::mock::{MockOptions, MockServer, USER_EMAIL, USER_PASSWORD};
use mender_connect_interop::preauth;
use mender_connect_interop::process::ManagedChild;
use mender_connect_interop::{Error, TestEnv, scenarios, wait};

/// Proxy and identity variables the agent must not inherit from the test's environment.
const CLEARED_ENV: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "DBUS_SYSTEM_BUS_ADDRESS",
    "DBUS_SESSION_BUS_ADDRESS",
];

/// Runs a bash script in `dir`; fails with its output.
fn sh(dir: &Path, script: &str) -> Result<String, Error> {
    let out = Command::new("/bin/bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .output()
        .context(|| format!("running {script:?}"))?;
    if !out.status.success() {
        return Err(Error::protocol(
            "bash",
            format!("{script:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Clone, Copy, Debug)]
enum KeyKind {
    Rsa,
    EcP256,
    Ed25519,
}

/// A device key as openssl writes it (RSA as traditional PKCS#1 like the Mender client's key, EC
/// as SEC1, Ed25519 as PKCS#8) and its PKIX public key.
fn device_key(dir: &Path, kind: KeyKind) -> Result<(PathBuf, PathBuf), Error> {
    let generate = match kind {
        KeyKind::Rsa => {
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out k.pem && openssl rsa -traditional -in k.pem -out device.pem 2>/dev/null"
        }
        KeyKind::EcP256 => "openssl ecparam -name prime256v1 -genkey -noout -out device.pem",
        KeyKind::Ed25519 => "openssl genpkey -algorithm ed25519 -out device.pem",
    };
    sh(
        dir,
        &format!("{generate}\nchmod 600 device.pem\nopenssl pkey -in device.pem -pubout -out device.pub.pem"),
    )?;
    Ok((dir.join("device.pem"), dir.join("device.pub.pem")))
}

/// An identity script printing `identity` as `key=value` lines.
fn identity_script(dir: &Path, identity: &Identity) -> Result<PathBuf, Error> {
    let path = dir.join("mender-device-identity");
    let script = format!("#!/bin/sh\ncat <<'EOF'\n{}\nEOF\n", identity.script_output());
    std::fs::write(&path, script).context(|| format!("writing {}", path.display()))?;
    sh(dir, "chmod 755 mender-device-identity")?;
    Ok(path)
}

/// Our agent in standalone mode: no bus address at all, `standalone` as the `Standalone` block.
fn start_agent(
    env: &TestEnv,
    name: &str,
    standalone: serde_json::Value,
    vars: &[(&str, &str)],
) -> Result<ManagedChild, Error> {
    let dir = env.subdir(name)?;
    let config = dir.join("mender-connect.conf");
    let document = serde_json::json!({
        "ShellCommand": "/bin/bash",
        "User": current_user()?,
        "Terminal": { "Width": 80, "Height": 24 },
        "ReconnectIntervalSeconds": 1,
        "ReconnectMaxIntervalSeconds": 2,
        "ControlSocket": dir.join("control.sock"),
        "Standalone": standalone,
    });
    std::fs::write(&config, format!("{document:#}\n")).context(|| format!("writing {}", config.display()))?;
    let mut cmd = Command::new(WorkspaceBin::RustMenderConnect.path()?);
    cmd.arg("--config")
        .arg(&config)
        .arg("--fallback-config")
        .arg(dir.join("no-fallback.conf"))
        .args(["--debug", "daemon"])
        .current_dir(&dir);
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    ManagedChild::spawn(env, name, cmd)
}

/// Waits until `log()` contains `needle` at least `times` times.
fn wait_log(what: &str, times: usize, needle: &str, log: impl Fn() -> String) -> Result<String, Error> {
    wait::until(what, wait::PEER_TIMEOUT, Duration::from_millis(200), || {
        let text = log();
        Ok((text.matches(needle).count() >= times).then_some(text))
    })
}

/// The device id the agent logged when the server accepted it.
fn accepted_device_id(agent: &ManagedChild) -> Result<String, Error> {
    let text = wait_log("the agent to be authorized", 1, "(device id ", || agent.log_text())?;
    text.split("(device id ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(str::to_owned)
        .ok_or_else(|| Error::Check(format!("no device id in the agent log: {text}")))
}

fn preauthorized_device(kind: KeyKind) -> Result<(), Error> {
    let name = format!("standalone-preauth-{kind:?}").to_lowercase();
    let env = TestEnv::new(&name)?;
    let mock = MockServer::start(&env, &MockOptions::default())?;
    let dir = env.subdir("device")?;
    let (private, public) = device_key(&dir, kind)?;
    let identity = Identity::mac_for(&name);
    let answer =
        preauth::preauthorize_with_curl(&env, mock.url(), USER_EMAIL, USER_PASSWORD, &identity, &public)?;
    assert_eq!(answer.status, 201, "preauthorization answered {answer:?}");
    let api = mock.login()?;
    let listed = api
        .find_device("mac", identity.mac())?
        .ok_or_else(|| Error::Check("preauthorized device not listed".into()))?;
    assert_eq!(listed.status, "preauthorized");

    let mut agent = start_agent(
        &env,
        "agent",
        serde_json::json!({
            "ServerURL": mock.url(),
            "PrivateKey": private,
            "IdentityScript": identity_script(&dir, &identity)?,
        }),
        &[],
    )?;
    api.wait_connected(&listed.id)?;
    // Nobody accepted anything: the preauthorized auth set is the one in use.
    let device = api.device(&listed.id)?;
    assert_eq!(device.status, "accepted", "{device:?}");
    assert_eq!(device.auth_sets.len(), 1, "no new auth set: {device:?}");
    assert_eq!(device.auth_sets[0].id, listed.auth_sets[0].id);
    assert_eq!(accepted_device_id(&agent)?, listed.id);

    let cli = MenderCli::new(&env, mock.url())?;
    cli.login(&env, USER_EMAIL, USER_PASSWORD)?;
    scenarios::terminal_round_trip(&env, &cli, &listed.id)?;
    agent.ensure_running()?;
    env.pass();
    Ok(())
}

#[test]
fn standalone_preauthorized_rsa_device_terminal() -> Result<(), Error> {
    preauthorized_device(KeyKind::Rsa)
}

#[test]
fn standalone_preauthorized_ec_p256_device_terminal() -> Result<(), Error> {
    preauthorized_device(KeyKind::EcP256)
}

#[test]
fn standalone_preauthorized_ed25519_device_terminal() -> Result<(), Error> {
    preauthorized_device(KeyKind::Ed25519)
}

/// Pending until accepted; after the token expires and the server drops the socket, the agent's
/// redial gets 401 and it authenticates again on its own.
#[test]
fn standalone_pending_then_accepted_and_reauth_after_token_expiry() -> Result<(), Error> {
    let env = TestEnv::new("standalone-pending")?;
    let ttl = 6;
    let options =
        MockOptions { extra_args: vec!["--device-token-ttl".into(), ttl.to_string()], ..Default::default() };
    let mock = MockServer::start(&env, &options)?;
    let dir = env.subdir("device")?;
    let (private, _) = device_key(&dir, KeyKind::Ed25519)?;
    let identity = Identity::mac_for("standalone-pending");
    let mut agent = start_agent(
        &env,
        "agent",
        serde_json::json!({
            "ServerURL": mock.url(),
            "PrivateKey": private,
            "Identity": identity.json(),
        }),
        &[],
    )?;
    let api = mock.login()?;
    let device = api.wait_for_device("mac", identity.mac(), "pending")?;
    // It keeps asking while pending.
    wait_log("repeated auth requests while pending", 2, "not authorized", || agent.log_text())?;
    assert!(!agent.log_text().contains("(device id "), "authorized while pending");
    api.accept_pending(&device)?;
    api.wait_connected(&device.id)?;
    assert_eq!(accepted_device_id(&agent)?, device.id);

    // Let the token expire, then have the server drop the socket.
    std::thread::sleep(Duration::from_secs(ttl + 1));
    let path = format!("/__mock/devices/{}/disconnect", device.id);
    let r = api.request("POST", &path, Body::Empty)?;
    assert!(r.status < 300, "disconnect answered {}", r.status);
    wait_log("a second authorization", 2, "(device id ", || agent.log_text())?;
    let log = agent.log_text();
    assert!(log.contains("the server refused the token; authenticating again"), "{log}");
    api.wait_connected(&device.id)?;
    let issued = mock.log_text().matches("accepted, token issued").count();
    assert!(issued >= 2, "the server issued {issued} tokens");
    agent.ensure_running()?;
    env.pass();
    Ok(())
}

/// CA 1 signs the server certificate (SAN 127.0.0.1 and mender.test); CA 2 is unrelated.
struct TlsFiles {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn tls_files(dir: &Path) -> Result<TlsFiles, Error> {
    sh(
        dir,
        "for ca in ca other-ca; do\n\
           openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
             -subj \"/CN=test $ca\" -keyout $ca.key -out $ca.crt 2>/dev/null\n\
         done\n\
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=mender.test \
           -keyout server.key -out server.csr 2>/dev/null\n\
         printf 'subjectAltName=IP:127.0.0.1,DNS:mender.test\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext.cnf\n\
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
           -extfile ext.cnf -out server.crt 2>/dev/null\n",
    )?;
    Ok(TlsFiles {
        ca: dir.join("ca.crt"),
        other_ca: dir.join("other-ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    })
}

/// The mock server on HTTPS with `--auto-accept`; returns it and its port.
fn start_tls_mock(env: &TestEnv, tls: &TlsFiles) -> Result<(ManagedChild, u16), Error> {
    let mut cmd = Command::new(WorkspaceBin::MockServer.path()?);
    cmd.args(["--listen", "127.0.0.1:0", "--auto-accept"])
        .arg("--tls-cert")
        .arg(&tls.cert)
        .arg("--tls-key")
        .arg(&tls.key);
    let (child, url) =
        ManagedChild::spawn_reading_first_line(env, "mock-server-tls", cmd, Duration::from_secs(60))?;
    let port = url
        .trim_end_matches('/')
        .strip_prefix("https://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| child.failure(&format!("printed {url:?}, expected https://127.0.0.1:PORT")))?;
    Ok((child, port))
}

/// One device key and identity per agent of a multi-agent test.
fn device(env: &TestEnv, name: &str) -> Result<serde_json::Value, Error> {
    let dir = env.subdir(&format!("{name}-device"))?;
    let (private, _) = device_key(&dir, KeyKind::EcP256)?;
    Ok(serde_json::json!({ "PrivateKey": private, "Identity": Identity::mac_for(name).json() }))
}

fn with(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    base
}

#[test]
fn standalone_tls_refuses_untrusted_certificates_and_accepts_the_configured_ca() -> Result<(), Error> {
    let env = TestEnv::new("standalone-tls")?;
    let tls = tls_files(&env.subdir("pki")?)?;
    let (mock, port) = start_tls_mock(&env, &tls)?;
    let url = format!("https://127.0.0.1:{port}");
    let cases = [
        ("default-roots", serde_json::json!({ "ServerURL": url })),
        ("other-ca", serde_json::json!({ "ServerURL": url, "ServerCertificate": tls.other_ca })),
        ("configured-ca", serde_json::json!({ "ServerURL": url, "ServerCertificate": tls.ca })),
        ("skip-verify", serde_json::json!({ "ServerURL": url, "SkipVerify": true })),
    ];
    let mut agents = Vec::new();
    for (name, cfg) in cases {
        agents.push(start_agent(&env, name, with(device(&env, name)?, cfg), &[])?);
    }
    for agent in &agents[2..] {
        let id = accepted_device_id(agent)?;
        wait_log("the trusting agent's websocket", 1, &format!("ws device {id}: connected"), || {
            mock.log_text()
        })?;
    }
    for agent in &agents[..2] {
        // Two refusals: the first retry was refused too.
        let log = wait_log("TLS refusals", 2, "TLS handshake with 127.0.0.1 failed", || agent.log_text())?;
        assert!(log.contains("invalid peer certificate"), "{log}");
        assert!(!log.contains("(device id ") && !log.contains("connection established"), "{log}");
    }
    let mock_log = mock.log_text();
    assert_eq!(mock_log.matches("accepted, token issued").count(), 2, "{mock_log}");
    env.pass();
    Ok(())
}

/// A CONNECT proxy on 127.0.0.1 that resolves `mender.test` to 127.0.0.1 and records each
/// CONNECT target; stops accepting when dropped.
struct ConnectProxy {
    port: u16,
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ConnectProxy {
    fn start() -> Result<Self, Error> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context(|| "binding the proxy".into())?;
        let port = listener.local_addr().context(|| "proxy address".into())?.port();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (Arc::clone(&targets), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let t = Arc::clone(&t);
                    std::thread::spawn(move || tunnel(conn, &t));
                }
            }
        });
        Ok(Self { port, targets, stop })
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

fn tunnel(client: TcpStream, targets: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(match client.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(n) if n > 2 => {}
            _ => break,
        }
    }
    let mut parts = request.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else { return };
    if let Ok(mut t) = targets.lock() {
        t.push(target.to_owned());
    }
    let Some((host, port)) = target.rsplit_once(':') else { return };
    let host = if host == "mender.test" { "127.0.0.1" } else { host };
    let mut client = client;
    let Ok(upstream) = TcpStream::connect((host, port.parse::<u16>().unwrap_or(0))) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").is_err() {
        return;
    }
    let (Ok(mut up_read), Ok(mut client_write)) = (upstream.try_clone(), client.try_clone()) else { return };
    let down = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client_write);
        let _ = client_write.shutdown(Shutdown::Write);
    });
    let mut upstream = upstream;
    let mut buffered = reader.buffer().to_vec();
    let _ = upstream.write_all(&buffered);
    buffered.clear();
    let mut rest = reader.into_inner();
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = rest.read(&mut buf) {
        if n == 0 || upstream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = upstream.shutdown(Shutdown::Write);
    let _ = down.join();
}

#[test]
fn standalone_https_proxy_and_no_proxy() -> Result<(), Error> {
    let env = TestEnv::new("standalone-proxy")?;
    let tls = tls_files(&env.subdir("pki")?)?;
    let (mock, port) = start_tls_mock(&env, &tls)?;
    // The name resolves only inside the proxy: a connection can only succeed through it.
    let url = format!("https://mender.test:{port}");
    let (via, bypass) = (ConnectProxy::start()?, ConnectProxy::start()?);
    let cfg = serde_json::json!({ "ServerURL": url, "ServerCertificate": tls.ca });
    let via_url = format!("http://127.0.0.1:{}", via.port);
    let through = start_agent(
        &env,
        "through-proxy",
        with(device(&env, "through")?, cfg.clone()),
        &[("HTTPS_PROXY", &via_url)],
    )?;
    let bypass_url = format!("http://127.0.0.1:{}", bypass.port);
    let direct = start_agent(
        &env,
        "no-proxy",
        with(device(&env, "direct")?, cfg),
        &[("https_proxy", &bypass_url), ("NO_PROXY", "localhost,.example.com,mender.test")],
    )?;

    let id = accepted_device_id(&through)?;
    wait_log("the proxied websocket", 1, &format!("ws device {id}: connected"), || mock.log_text())?;
    let targets = via.targets();
    let expected = format!("mender.test:{port}");
    // One tunnel for the auth request, one for the websocket.
    assert!(targets.len() >= 2 && targets.iter().all(|t| *t == expected), "{targets:?}");

    // The bypassing agent dials mender.test itself, which does not resolve here.
    let log =
        wait_log("direct dial attempts", 2, "auth request to https://mender.test", || direct.log_text())?;
    assert!(!log.contains("(device id "), "{log}");
    assert!(bypass.targets().is_empty(), "NO_PROXY ignored: {:?}", bypass.targets());
    env.pass();
    Ok(())
}
