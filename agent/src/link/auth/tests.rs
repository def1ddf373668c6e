//! The D-Bus client against a real private `dbus-daemon` and the test auth service.

use super::*;
use mender_test_auth::{AuthService, Event, ServiceConfig, TestBus};
use std::time::{Duration, Instant};

/// Failure bound only; the machine may be loaded.
const LIMIT: Duration = Duration::from_secs(30);

fn creds(token: &str, url: &str) -> Credentials {
    Credentials { token: token.into(), server_url: url.into() }
}

fn service(bus: &TestBus, token: &str, url: &str, fetch: Option<&str>) -> AuthService {
    AuthService::start(ServiceConfig {
        bus: Some(bus.address.clone()),
        token: token.into(),
        server_url: url.into(),
        fetch_token: fetch.map(str::to_owned),
    })
    .unwrap_or_else(|e| panic!("test auth service: {e}"))
}

/// The next update, which must be credentials.
fn next(rx: &async_channel::Receiver<Update>) -> Credentials {
    match next_update(rx) {
        Update::Credentials(c) => c,
        other => panic!("expected credentials, got {other:?}"),
    }
}

fn next_update(rx: &async_channel::Receiver<Update>) -> Update {
    let deadline = Instant::now() + LIMIT;
    loop {
        match rx.try_recv() {
            Ok(c) => return c,
            Err(async_channel::TryRecvError::Empty) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("no credentials: {e:?}"),
        }
    }
}

#[test]
fn current_token_is_delivered_first() {
    let bus = TestBus::start().unwrap();
    let svc = service(&bus, "tok-1", "http://127.0.0.1:1001", None);
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let c = next(&auth.credentials());
    assert_eq!(c, creds("tok-1", "http://127.0.0.1:1001"));
    assert!(c.is_authorized());
    assert!(svc.wait_for(LIMIT, |e| *e == Event::GetJwtToken).is_some());
    // A present token is not fetched again.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!svc.drain_events().contains(&Event::FetchJwtToken));
}

#[test]
fn every_token_change_is_delivered() {
    let bus = TestBus::start().unwrap();
    let svc = service(&bus, "tok-1", "http://127.0.0.1:1001", None);
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let rx = auth.credentials();
    assert_eq!(next(&rx).token, "tok-1");
    svc.set("tok-2", "http://127.0.0.1:1002");
    assert_eq!(next(&rx), creds("tok-2", "http://127.0.0.1:1002"));
    svc.clear();
    let c = next(&rx);
    assert_eq!(c, creds("", ""));
    assert!(!c.is_authorized());
    svc.set("tok-3", "http://127.0.0.1:1003");
    assert_eq!(next(&rx), creds("tok-3", "http://127.0.0.1:1003"));
}

#[test]
fn empty_token_makes_the_client_fetch_one() {
    let bus = TestBus::start().unwrap();
    let svc = service(&bus, "", "", Some("fetched"));
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let rx = auth.credentials();
    assert_eq!(next(&rx), creds("", ""));
    assert!(svc.wait_for(LIMIT, |e| *e == Event::FetchJwtToken).is_some(), "FetchJwtToken not called");
    assert_eq!(next(&rx).token, "fetched");
}

#[test]
fn fetch_asks_for_a_new_token() {
    let bus = TestBus::start().unwrap();
    let svc = service(&bus, "tok-1", "http://127.0.0.1:1001", None);
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let rx = auth.credentials();
    assert_eq!(next(&rx).token, "tok-1");
    auth.fetch();
    assert!(svc.wait_for(LIMIT, |e| *e == Event::FetchJwtToken).is_some(), "FetchJwtToken not called");
    // The service answers with a signal, delivered even though the token did not change.
    assert_eq!(next(&rx), creds("tok-1", "http://127.0.0.1:1001"));
}

#[test]
fn auth_service_restart_is_recovered() {
    let bus = TestBus::start().unwrap();
    let first = service(&bus, "tok-1", "http://127.0.0.1:1001", None);
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let rx = auth.credentials();
    assert_eq!(next(&rx).token, "tok-1");
    first.stop();
    // What the old instance handed out (its proxy port) is void.
    assert_eq!(next_update(&rx), Update::Revoked);
    // A new instance hands out a new proxy URL without emitting anything by itself.
    let _second = service(&bus, "tok-2", "http://127.0.0.1:2002", None);
    assert_eq!(next(&rx), creds("tok-2", "http://127.0.0.1:2002"));
}

#[test]
fn auth_service_starting_late_is_picked_up() {
    let bus = TestBus::start().unwrap();
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let rx = auth.credentials();
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.is_empty(), "credentials without a service: {:?}", rx.try_recv());
    let _svc = service(&bus, "late", "http://127.0.0.1:3003", None);
    assert_eq!(next(&rx), creds("late", "http://127.0.0.1:3003"));
}

#[test]
fn signals_from_other_connections_are_ignored() {
    let bus = TestBus::start().unwrap();
    let svc = service(&bus, "tok-1", "http://127.0.0.1:1001", None);
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let rx = auth.credentials();
    assert_eq!(next(&rx).token, "tok-1");

    // An impostor broadcasts the same signal from the same path without owning the name.
    let mut ch = dbus::channel::Channel::open_private(&bus.address).unwrap();
    ch.register().unwrap();
    let forged = dbus::Message::new_signal(OBJECT_PATH, INTERFACE, SIGNAL_TOKEN_CHANGED)
        .unwrap()
        .append2("forged", "http://evil.example");
    ch.send(forged).unwrap();
    ch.flush();

    svc.set("tok-2", "http://127.0.0.1:1002");
    assert_eq!(next(&rx), creds("tok-2", "http://127.0.0.1:1002"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(rx.is_empty(), "forged signal delivered: {:?}", rx.try_recv());
}

#[test]
fn bus_restart_is_recovered() {
    let bus = TestBus::start().unwrap();
    let address = bus.address.clone();
    let svc = service(&bus, "tok-1", "http://127.0.0.1:1001", None);
    let auth = spawn(Some(address.clone())).unwrap();
    let rx = auth.credentials();
    assert_eq!(next(&rx).token, "tok-1");
    drop(svc);
    assert_eq!(next_update(&rx), Update::Revoked);
    let dir = bus.stop();
    let bus = TestBus::start_in(dir).unwrap();
    assert_eq!(bus.address, address);
    let _svc = service(&bus, "tok-2", "http://127.0.0.1:1002", None);
    assert_eq!(next(&rx), creds("tok-2", "http://127.0.0.1:1002"));
}

#[test]
fn unreachable_bus_is_an_error() {
    let dir = std::env::temp_dir().join(format!("mcrs-nobus-{}", std::process::id()));
    let e = spawn(Some(format!("unix:path={}/none", dir.display()))).unwrap_err();
    assert!(matches!(e, AuthError::Bus(_)), "{e}");
    assert!(e.to_string().starts_with("mender-connect dbus failed to connect"), "{e}");
}

#[test]
fn dropping_the_handle_stops_the_thread() {
    let bus = TestBus::start().unwrap();
    let _svc = service(&bus, "tok-1", "http://127.0.0.1:1001", None);
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let rx = auth.credentials();
    assert_eq!(next(&rx).token, "tok-1");
    drop(auth);
    // The sender side goes away with the thread.
    let deadline = Instant::now() + LIMIT;
    while !rx.is_closed() {
        assert!(Instant::now() < deadline, "D-Bus thread still running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn unauthorized_client_asks_again_slowly() {
    // A 4.x mender-auth answers a failed fetch with ("", "") and does not retry by itself.
    let bus = TestBus::start().unwrap();
    let svc = service(&bus, "", "", None);
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let rx = auth.credentials();
    assert_eq!(next(&rx), creds("", ""));
    assert!(svc.wait_for(LIMIT, |e| *e == Event::FetchJwtToken).is_some(), "first FetchJwtToken");
    assert_eq!(next(&rx), creds("", "")); // the failed fetch's signal
    // Not immediately again (that would hammer a server that rejects the device) ...
    std::thread::sleep(Duration::from_millis(500));
    assert!(!svc.drain_events().contains(&Event::FetchJwtToken), "re-fetched without delay");
    // ... but after the back-off (2 s in tests, 60 s in the daemon).
    assert!(svc.wait_for(LIMIT, |e| *e == Event::FetchJwtToken).is_some(), "no second FetchJwtToken");
    // Once a token arrives, the schedule stops.
    svc.set("tok", "http://127.0.0.1:1");
    let deadline = Instant::now() + LIMIT;
    while next(&rx).token != "tok" {
        assert!(Instant::now() < deadline);
    }
    std::thread::sleep(Duration::from_secs(5));
    assert!(!svc.drain_events().contains(&Event::FetchJwtToken), "re-fetched while authorized");
}

/// A private bus with Debian's system policy: any local user may send signals to anyone.
fn system_bus() -> TestBus {
    TestBus::start_system_policy().unwrap_or_else(|e| panic!("system-policy bus: {e}"))
}

fn assert_nothing_more(rx: &async_channel::Receiver<Update>) {
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.is_empty(), "unexpected update: {:?}", rx.try_recv());
}

#[test]
fn unicast_and_broadcast_forgeries_by_a_local_user_are_ignored() {
    let bus = system_bus();
    let svc = service(&bus, "tok-1", "http://127.0.0.1:1001", None);
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let rx = auth.credentials();
    assert_eq!(next(&rx).token, "tok-1");

    // uid 65534 sends the signal straight to every connection (ours included), and broadcasts it.
    let script = mender_test_auth::forge_token_signal_script("forged", "http://127.0.0.1:6666");
    let (status, out) = mender_test_auth::run_as_nobody(&bus.address, &script).unwrap();
    assert!(status.success(), "the attack itself failed: {out}");
    let sent: u32 = out.trim().strip_prefix("sent ").and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(sent >= 2, "the attacker reached too few connections: {out}");
    assert_nothing_more(&rx);

    // The real owner is still heard.
    svc.set("tok-2", "http://127.0.0.1:1002");
    assert_eq!(next(&rx), creds("tok-2", "http://127.0.0.1:1002"));
    assert_nothing_more(&rx);
}

#[test]
fn forged_name_owner_change_does_not_make_a_local_user_the_owner() {
    let bus = system_bus();
    let svc = service(&bus, "tok-1", "http://127.0.0.1:1001", None);
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let rx = auth.credentials();
    assert_eq!(next(&rx).token, "tok-1");

    // The attacker claims, in the bus's own signal, that the name now belongs to it, then sends
    // the token signal as that "owner".
    let forged_owner = r#"names=$(dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.ListNames | sed -n 's/.*string "\(:[0-9.]*\)".*/\1/p')
for name in $names; do
  dbus-send --system --dest="$name" --type=signal /org/freedesktop/DBus org.freedesktop.DBus.NameOwnerChanged string:io.mender.AuthenticationManager string:x string:
  dbus-send --system --dest="$name" --type=signal /org/freedesktop/DBus org.freedesktop.DBus.NameOwnerChanged string:io.mender.AuthenticationManager string: string:"$name"
done
echo done"#;
    let (status, out) = mender_test_auth::run_as_nobody(&bus.address, forged_owner).unwrap();
    assert!(status.success(), "the attack itself failed: {out}");
    let script = mender_test_auth::forge_token_signal_script("forged", "http://127.0.0.1:6666");
    let (status, out) = mender_test_auth::run_as_nobody(&bus.address, &script).unwrap();
    assert!(status.success(), "the attack itself failed: {out}");
    // Neither a revocation nor a re-read nor the forged token.
    assert_nothing_more(&rx);
    svc.set("tok-2", "http://127.0.0.1:1002");
    assert_eq!(next(&rx), creds("tok-2", "http://127.0.0.1:1002"));
}

#[test]
fn owner_leaving_revokes_and_nothing_follows_until_a_new_owner() {
    let bus = system_bus();
    let svc = service(&bus, "tok-1", "http://127.0.0.1:1001", None);
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let rx = auth.credentials();
    assert_eq!(next(&rx).token, "tok-1");
    svc.stop();
    assert_eq!(next_update(&rx), Update::Revoked);
    // Asking for the token while nobody owns the name yields nothing (no stale answer).
    auth.reread();
    auth.fetch();
    assert_nothing_more(&rx);
    let _svc = service(&bus, "tok-2", "http://127.0.0.1:2002", None);
    assert_eq!(next(&rx), creds("tok-2", "http://127.0.0.1:2002"));
}

#[test]
fn reread_answers_even_when_nothing_changed() {
    let bus = TestBus::start().unwrap();
    let svc = service(&bus, "tok-1", "http://127.0.0.1:1001", None);
    let auth = spawn(Some(bus.address.clone())).unwrap();
    let rx = auth.credentials();
    assert_eq!(next(&rx).token, "tok-1");
    assert!(svc.wait_for(LIMIT, |e| *e == Event::GetJwtToken).is_some());
    auth.reread();
    assert!(svc.wait_for(LIMIT, |e| *e == Event::GetJwtToken).is_some(), "no second GetJwtToken");
    assert_eq!(next(&rx), creds("tok-1", "http://127.0.0.1:1001"));
}
