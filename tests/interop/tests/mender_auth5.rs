//! Issue 20: our agent with the real C++ `mender-auth` 5.0.0 (Debian experimental, in the trixie
//! root of `tests/trixie-root.sh`) against the mock server, on a private system bus that enforces
//! the Mender client's own D-Bus policy. The device key is preauthorized through the management
//! API (the documented curl flow) and installed as `/var/lib/mender/mender-agent.pem`.
//!
//! `mender-auth` is passive: it authenticates only when someone calls `FetchJwtToken`, and its
//! `server_url` is a local forwarder `http://127.0.0.1:<port>` that moves to a new port after every
//! successful fetch, dropping the tunnels through the old one. Each test checks what the agent
//! does and what an operator with `mender-cli` sees of open sessions across the event.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mender_connect_interop::agent::{Agent, AgentKind};
use mender_connect_interop::auth_bus::JwtAndUrl;
use mender_connect_interop::cli::MenderCli;
use mender_connect_interop::client5::{Device5, url_port};
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::mock::{
    MockOptions, MockServer, USER_EMAIL, USER_PASSWORD, device_inventory_status,
};
use mender_connect_interop::operator::{OpenSessions, OperatorView};
use mender_connect_interop::{Error, TestEnv, jwt, scenarios, wait};

/// Device token lifetime on the mock for the expiry test: long enough to set everything up on a
/// loaded machine.
const TOKEN_TTL_SECS: u64 = 30;

/// How long the operator's probes wait for an answer after an event.
const PROBE_WAIT: Duration = Duration::from_secs(20);

fn ensure(ok: bool, what: impl Into<String>) -> Result<(), Error> {
    if ok { Ok(()) } else { Err(Error::Check(what.into())) }
}

struct Bed {
    agent: Agent,
    dev: Device5,
    mock: MockServer,
}

/// Mock server, preauthorized device with `mender-auth` running (no token yet), then our agent;
/// waits until the server reports the device connected.
fn start(env: &TestEnv, name: &str, mock_options: MockOptions) -> Result<Bed, Error> {
    let mock = MockServer::start(env, &mock_options)?;
    let dev = Device5::start(env, &mock, Identity::mac_for(name))?;
    eprintln!("{name}: root packages:\n{}", Device5::versions()?);
    let agent = Agent::start(env, &dev.bus, AgentKind::Rust)?;
    dev.api.wait_connected(&dev.device_id)?;
    Ok(Bed { agent, dev, mock })
}

/// What `GetJwtToken` answers, checked to be a token the mock accepts and a forwarder URL.
fn current_token(bed: &Bed) -> Result<JwtAndUrl, Error> {
    let now = bed.dev.bus_client.get_jwt_token()?;
    ensure(!now.token.is_empty(), "GetJwtToken returned no token")?;
    let port = url_port(&now.server_url);
    ensure(
        now.server_url.starts_with("http://127.0.0.1:") && port.is_some() && port != Some(bed.mock.port()?),
        format!("server_url {:?} is not mender-auth's forwarder", now.server_url),
    )?;
    Ok(now)
}

/// Waits until `GetJwtToken` hands out a forwarder other than `old` and the server reports the
/// device connected again.
fn wait_moved(bed: &Bed, old: &JwtAndUrl) -> Result<JwtAndUrl, Error> {
    let moved = wait::until(
        "mender-auth to hand out a new forwarder URL",
        wait::PEER_TIMEOUT,
        Duration::from_millis(250),
        || {
            let now = bed.dev.bus_client.get_jwt_token()?;
            Ok((!now.token.is_empty() && now.server_url != old.server_url).then_some(now))
        },
    )?;
    bed.dev.api.wait_connected(&bed.dev.device_id)?;
    Ok(moved)
}

fn operator(env: &TestEnv, bed: &Bed) -> Result<MenderCli, Error> {
    let cli = MenderCli::new(env, bed.mock.url())?;
    cli.login(env, USER_EMAIL, USER_PASSWORD)?;
    Ok(cli)
}

#[test]
fn rust_agent_gets_the_first_token_from_a_passive_mender_auth() -> Result<(), Error> {
    let name = "auth5-first-token";
    let env = TestEnv::new(name)?;
    let mock = MockServer::start(&env, &MockOptions::default())?;
    let dev = Device5::start(&env, &mock, Identity::mac_for(name))?;
    // Passive: owning its name, mender-auth has not authenticated, and does not by itself.
    let before = dev.bus_client.get_jwt_token()?;
    assert_eq!(before, JwtAndUrl { token: String::new(), server_url: String::new() });
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !mock.log_text().contains("token issued"),
        "mender-auth authenticated before anyone called FetchJwtToken"
    );

    let mut agent = Agent::start(&env, &dev.bus, AgentKind::Rust)?;
    dev.api.wait_connected(&dev.device_id)?;
    let bed = Bed { agent, dev, mock };
    let token = current_token(&bed)?;
    assert!(bed.agent.log_text().contains("FetchJwtToken"), "the agent asked mender-auth for the token");
    let claims = jwt::claims(&token.token)?;
    assert_eq!(claims["sub"].as_str(), Some(bed.dev.device_id.as_str()), "{claims}");
    let signalled = bed.dev.bus_client.token_changes(Duration::from_secs(1))?;
    assert!(signalled.contains(&token), "JwtTokenStateChange carried the token: {signalled:?}");
    // The preauthorized auth set is the one accepted; no new one appeared.
    let device = bed.dev.api.device(&bed.dev.device_id)?;
    assert_eq!(device.auth_sets.len(), 1, "{device:?}");
    assert_eq!(device.auth_sets[0].status, "accepted");

    let cli = operator(&env, &bed)?;
    scenarios::terminal_round_trip(&env, &cli, &bed.dev.device_id)?;
    agent = bed.agent;
    agent.ensure_running()?;
    env.pass();
    Ok(())
}

/// The token expires on the mock; when the connection then drops (server restart, same state) the
/// redial through the forwarder gets 401, the agent calls `FetchJwtToken`, mender-auth
/// authenticates again and moves its forwarder to a new port, and the agent follows it.
#[test]
fn rust_agent_refetches_after_token_expiry_and_follows_the_new_forwarder() -> Result<(), Error> {
    let name = "auth5-token-expiry";
    let env = TestEnv::new(name)?;
    let options = MockOptions {
        state_file: Some(env.dir().join("mock-state.json")),
        extra_args: vec!["--device-token-ttl".into(), TOKEN_TTL_SECS.to_string()],
        ..MockOptions::default()
    };
    let mut bed = start(&env, name, options)?;
    let old = current_token(&bed)?;
    let exp = jwt::claims(&old.token)?["exp"].as_u64().unwrap_or(0);
    wait::until(
        "the device token to expire",
        Duration::from_secs(TOKEN_TTL_SECS + 120),
        Duration::from_secs(1),
        || {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            Ok((now > exp && device_inventory_status(bed.mock.url(), &old.token)? == 401).then_some(()))
        },
    )?;
    let cli = operator(&env, &bed)?;
    let mut open = OpenSessions::open(&env, &cli, &bed.dev.device_id)?;
    let fetches_before = bed.agent.log_text().matches("FetchJwtToken").count();
    bed.mock.restart(&env)?;
    let fresh = wait_moved(&bed, &old)?;
    let seen = open.observe(PROBE_WAIT)?;
    eprintln!("{name}: operator after the server restart and re-fetch: {seen:?}");
    // The server restart ended every operator connection: the terminal is dead (mender-cli 1.9
    // was seen to keep it open, silent), and `mender-cli port-forward` exits with its websocket.
    assert!(!seen.terminal_answers && !seen.open_connection_echoes, "{seen:?}");
    assert!(seen.forward_ended, "{seen:?}");
    assert_ne!(fresh.token, old.token, "a new token");
    assert_eq!(device_inventory_status(bed.mock.url(), &fresh.token)?, 200, "the server accepts it");
    assert!(
        bed.agent.log_text().matches("FetchJwtToken").count() > fetches_before,
        "the agent asked for the new token"
    );
    // New transfers work at once; a new terminal is refused until the orphaned shell's health
    // check (see rust_agent_serves_a_new_terminal_right_after_the_forwarder_moves).
    let device_dir = env.subdir("device-files")?;
    scenarios::file_round_trip(&env, &cli, &bed.dev.device_id, &device_dir, 100 * 1024)?;
    bed.agent.ensure_running()?;
    bed.dev.auth.ensure_running()?;
    env.pass();
    Ok(())
}

/// Another client of mender-auth (mender-updated does this after a 401 on its own API calls;
/// Mender's integration tests use `dbus-send`) calls `FetchJwtToken` while the agent is connected
/// and an operator has a terminal and a port forward open: the forwarder moves to a new port,
/// dropping the agent's tunnel; the agent reconnects through the new one.
#[test]
fn rust_agent_follows_the_forwarder_when_another_client_fetches() -> Result<(), Error> {
    let name = "auth5-other-fetch";
    let env = TestEnv::new(name)?;
    let mut bed = start(&env, name, MockOptions::default())?;
    let old = current_token(&bed)?;
    let cli = operator(&env, &bed)?;
    let mut open = OpenSessions::open(&env, &cli, &bed.dev.device_id)?;
    assert!(bed.dev.bus_client.fetch_jwt_token()?, "FetchJwtToken accepted");
    let fresh = wait_moved(&bed, &old)?;
    assert_ne!(url_port(&fresh.server_url), url_port(&old.server_url));
    let seen = open.observe(PROBE_WAIT)?;
    eprintln!("{name}: operator after the forwarder moved: {seen:?}");
    assert_eq!(seen, expected_after_reconnect(), "what the operator sees");
    // New transfers work at once (no per-user limit on them); a new terminal: see the
    // test below.
    let device_dir = env.subdir("device-files")?;
    scenarios::file_round_trip(&env, &cli, &bed.dev.device_id, &device_dir, 100 * 1024)?;
    bed.agent.ensure_running()?;
    env.pass();
    Ok(())
}

/// Found with this suite: when the forwarder moves while an operator has a terminal open, the
/// server ends the operator's session (the device's websocket dropped), but the shell outlives
/// the quick reconnect (the disconnect grace). The operator's next `mender-cli terminal` used to
/// be refused with "user has too many open sessions" (`MaxPerUser` 1), which mender-cli 1.9 does
/// not show: a blank terminal until the orphan's health check failed about 65 s later (the Go
/// agents behave the same; upstream integration PR #2953 reports the symptom). Now a shell not
/// heard of since the reconnect gives its slot to the user's new terminal.
#[test]
fn rust_agent_serves_a_new_terminal_right_after_the_forwarder_moves() -> Result<(), Error> {
    let name = "auth5-new-terminal";
    let env = TestEnv::new(name)?;
    let mut bed = start(&env, name, MockOptions::default())?;
    let old = current_token(&bed)?;
    let cli = operator(&env, &bed)?;
    let mut open = OpenSessions::open(&env, &cli, &bed.dev.device_id)?;
    assert!(bed.dev.bus_client.fetch_jwt_token()?, "FetchJwtToken accepted");
    wait_moved(&bed, &old)?;
    let seen = open.observe(PROBE_WAIT)?;
    assert!(seen.terminal_ended, "{seen:?}");
    scenarios::terminal_round_trip(&env, &cli, &bed.dev.device_id)?;
    bed.agent.ensure_running()?;
    env.pass();
    Ok(())
}

/// mender-auth restarts (a package upgrade, `systemctl restart mender-authd`): it comes back
/// without a token (passive, nothing cached); the agent sees the name's new owner, asks it for a
/// token and connects through its new forwarder.
#[test]
fn rust_agent_reconnects_after_mender_auth_restarts() -> Result<(), Error> {
    let name = "auth5-restart";
    let env = TestEnv::new(name)?;
    let mut bed = start(&env, name, MockOptions::default())?;
    let old = current_token(&bed)?;
    let cli = operator(&env, &bed)?;
    let mut open = OpenSessions::open(&env, &cli, &bed.dev.device_id)?;
    let fetches_before = bed.agent.log_text().matches("FetchJwtToken").count();
    bed.dev.auth.restart(&env, &bed.dev.device)?;
    bed.dev.auth.wait_for_bus_name(&bed.dev.bus_client)?;
    let fresh = wait_moved(&bed, &old)?;
    assert!(
        bed.agent.log_text().matches("FetchJwtToken").count() > fetches_before,
        "the agent asked the restarted mender-auth for a token"
    );
    assert_ne!(url_port(&fresh.server_url), url_port(&old.server_url));
    let seen = open.observe(PROBE_WAIT)?;
    eprintln!("{name}: operator after the restart: {seen:?}");
    assert_eq!(seen, expected_after_reconnect(), "what the operator sees");
    scenarios::terminal_round_trip(&env, &cli, &bed.dev.device_id)?;
    bed.agent.ensure_running()?;
    env.pass();
    Ok(())
}

/// mender-auth exits and stays away: its forwarder port is dead, and nothing there may be trusted
/// (another process could bind it). The agent must drop the credentials with the name's owner and
/// stop dialling that port. A listener the test binds on the old port must see no connection.
#[test]
fn rust_agent_stops_dialling_after_mender_auth_exits() -> Result<(), Error> {
    let name = "auth5-exit";
    let env = TestEnv::new(name)?;
    let mut bed = start(&env, name, MockOptions::default())?;
    let old = current_token(&bed)?;
    let port = url_port(&old.server_url).unwrap_or(0);
    bed.dev.auth.stop();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .map_err(|e| Error::io(format!("binding the dead forwarder port {port}"), e))?;
    listener.set_nonblocking(true).map_err(|e| Error::io("non-blocking listener", e))?;
    // ReconnectIntervalSeconds is 2: a redialling agent comes back within this window several
    // times over.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dialled = 0u32;
    while Instant::now() < deadline {
        if listener.accept().is_ok() {
            dialled += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bed.agent.ensure_running()?;
    assert_eq!(dialled, 0, "the agent dialled the dead forwarder port {port} after mender-auth exited");
    env.pass();
    Ok(())
}

/// What the operator sees when the agent's websocket was dropped and re-established (forwarder
/// moved, mender-auth restarted), with the mock server as the real one behaves: the device's
/// connection ends, so the server ends the user's terminal session and `mender-cli terminal`
/// exits; `mender-cli port-forward` keeps running (it opens one server session per local
/// connection): the connection that was open is dead, a new one through the same forward works.
fn expected_after_reconnect() -> OperatorView {
    OperatorView {
        terminal_ended: true,
        terminal_answers: false,
        forward_ended: false,
        open_connection_echoes: false,
        new_connection_echoes: true,
    }
}

/// The reference with the same peer: Go mender-connect 2.3.0 never calls `FetchJwtToken` (it only
/// reads `GetJwtToken` and waits for the signal), so with a passive mender-auth and nobody else
/// asking, it stays unconnected; once another client (mender-updated on a device) fetches, it
/// connects through the forwarder. Ours asks by itself (the first test above).
#[test]
fn go23_agent_waits_for_someone_else_to_fetch_from_a_passive_mender_auth() -> Result<(), Error> {
    let name = "auth5-go23-passive";
    let env = TestEnv::new(name)?;
    let mock = MockServer::start(&env, &MockOptions::default())?;
    let dev = Device5::start(&env, &mock, Identity::mac_for(name))?;
    let mut agent = Agent::start(&env, &dev.bus, AgentKind::Go23)?;
    // A bounded observation of a negative: 15 s is several times what the connection takes once
    // a token exists.
    std::thread::sleep(Duration::from_secs(15));
    agent.ensure_running()?;
    assert!(!mock.log_text().contains("token issued"), "nobody fetched, yet mender-auth authenticated");
    assert_ne!(dev.api.connect_status(&dev.device_id)?.as_deref(), Some("connected"));
    assert!(dev.bus_client.fetch_jwt_token()?, "FetchJwtToken accepted");
    dev.api.wait_connected(&dev.device_id)?;
    agent.ensure_running()?;
    env.pass();
    Ok(())
}

/// The agent's `FetchJwtToken` has a backoff: on a device the server has not accepted, mender-auth's
/// fetch fails (signal with empty strings) and mender-auth does not retry by itself; the agent asks
/// again only after a minute (doubling up to 10 min), not in a loop against the server. Once the
/// operator accepts the device, the agent's next ask gets the token and it connects.
#[test]
fn rust_agent_refetches_with_a_backoff_while_the_device_is_pending() -> Result<(), Error> {
    let name = "auth5-pending";
    let env = TestEnv::new(name)?;
    let mock = MockServer::start(&env, &MockOptions::default())?;
    let dev = Device5::start_with(&env, &mock, Identity::mac_for(name), false)?;
    let mut agent = Agent::start(&env, &dev.bus, AgentKind::Rust)?;
    let pending = dev.api.wait_for_device("mac", dev.identity.mac(), "pending")?;
    let refused = "not accepted";
    wait::until("the first auth request", wait::PEER_TIMEOUT, Duration::from_millis(200), || {
        Ok(mock.log_text().contains(refused).then_some(()))
    })?;
    let refused_at = Instant::now();
    // Accepted at once: mender-auth does not retry by itself, so only the agent's next
    // FetchJwtToken can bring the token. An agent that asked in a loop would connect within a
    // second or two; ours waits its first re-fetch delay (60 s).
    dev.api.accept_pending(&pending)?;
    dev.api.wait_connected(&pending.id)?;
    let waited = refused_at.elapsed();
    assert!(
        waited >= Duration::from_secs(20),
        "the agent asked mender-auth again {waited:?} after a failed fetch"
    );
    assert_eq!(mock.log_text().matches(refused).count(), 1, "one refused request only");
    agent.ensure_running()?;
    env.pass();
    Ok(())
}
