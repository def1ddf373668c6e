//! Unit tests of the mender-client trigger: the command run, its reply, and the error texts.
//! The client binary is a small script recording its arguments (the real client needs its
//! daemon and a server; the interop tests cover it).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mender_connect_core::menderclient as mc;
use mender_connect_core::{Frame, FrameOut, MAX_FRAME_LEN, Prop, Proto};

use super::{MenderClient, Settings};
use crate::proto::router::SessionHandler;

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> Dir {
    let p = std::env::temp_dir().join(format!("mc-client-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    Dir(p)
}

fn script(d: &Dir, name: &str, exit: i32) -> PathBuf {
    let p = d.0.join(name);
    let log = d.0.join("calls");
    std::fs::write(&p, format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit {exit}\n", log.display())).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn request(typ: &str) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let props = [Prop::str("user_id", "u1")];
    let n = FrameOut { proto: Proto::MENDER_CLIENT, typ, props: &props, ..FrameOut::EMPTY }
        .encode(&mut buf)
        .unwrap();
    buf.truncate(n);
    buf
}

/// Serves `typ`; returns (typ, status, body) of the reply.
fn ask(settings: Settings, typ: &str) -> (String, i64, String) {
    let (tx, rx) = async_channel::bounded(4);
    let mut h = MenderClient::new(Arc::new(settings), tx);
    let req = request(typ);
    let mut out = Vec::new();
    h.serve("", &Frame::decode(&req).unwrap(), &mut out);
    let reply = out.pop().or_else(|| {
        smol::block_on(futures_lite::FutureExt::or(async { rx.recv().await.ok() }, async {
            smol::Timer::after(Duration::from_secs(30)).await;
            None
        }))
    });
    let reply = reply.expect("no reply");
    let f = Frame::decode(&reply).unwrap();
    assert_eq!(f.header.proto, Proto::MENDER_CLIENT);
    let status = f.header.props.get_i64(mc::PROP_STATUS).unwrap();
    (f.header.typ.to_owned(), status, String::from_utf8_lossy(f.body).into_owned())
}

#[test]
fn runs_the_first_existing_client() {
    let d = dir("ok");
    let first = script(&d, "mender-update", 0);
    let second = script(&d, "mender", 0);
    let s = || Settings {
        candidates: vec![d.0.join("missing"), first.clone(), second.clone()],
        ..Settings::default()
    };
    assert_eq!(ask(s(), mc::CHECK_UPDATE), (mc::CHECK_UPDATE.to_owned(), 1, String::new()));
    assert_eq!(ask(s(), mc::SEND_INVENTORY), (mc::SEND_INVENTORY.to_owned(), 1, String::new()));
    assert_eq!(std::fs::read_to_string(d.0.join("calls")).unwrap(), "check-update\nsend-inventory\n");
}

#[test]
fn failures_have_reference_texts() {
    let d = dir("fail");
    let bad = script(&d, "mender", 3);
    let (_, status, body) = ask(Settings { candidates: vec![bad], ..Settings::default() }, mc::CHECK_UPDATE);
    assert_eq!((status, body.as_str()), (2, "exit status 3"));
    let none = vec![d.0.join("a"), d.0.join("b")];
    let (_, status, body) = ask(Settings { candidates: none, ..Settings::default() }, mc::SEND_INVENTORY);
    assert_eq!(status, 2);
    assert_eq!(
        body,
        format!(
            "Cannot find Mender client binary, tried [{} {}]",
            d.0.join("a").display(),
            d.0.join("b").display()
        )
    );
    let (typ, status, body) = ask(Settings::default(), "reboot");
    assert_eq!((typ.as_str(), status, body.as_str()), ("reboot", 2, "unknown message type"));
}

#[test]
fn a_hanging_client_times_out_and_is_killed_and_reaped() {
    let d = dir("hang");
    let pid_file = d.0.join("pid");
    let p = d.0.join("mender");
    std::fs::write(&p, format!("#!/bin/sh\necho $$ > '{}'\nexec sleep 30\n", pid_file.display())).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let settings = Settings { candidates: vec![p.clone()], timeout: Duration::from_millis(300) };
    let (_, status, body) = ask(settings, mc::CHECK_UPDATE);
    assert_eq!((status, body), (2, format!("{} check-update: timed out after 300ms", p.display())));
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    // Gone from /proc only once killed and reaped (a zombie keeps its entry).
    let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
    for _ in 0..100 {
        if !proc_dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the client {} still exists 5 s after its timeout", pid.trim());
}

#[test]
fn a_client_ended_by_a_signal_is_named() {
    let d = dir("signal");
    let p = d.0.join("mender");
    std::fs::write(&p, "#!/bin/sh\nkill -TERM $$\nsleep 5\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_, status, body) = ask(Settings { candidates: vec![p], ..Settings::default() }, mc::SEND_INVENTORY);
    assert_eq!((status, body.as_str()), (2, "signal: 15"));
}

/// Issue 16, finding 6: 25 `check-update` requests from several sessions while one runs start
/// one client process, and every request gets its result; past `MAX_WAITING` a request gets a
/// clear error at once. Another command runs alongside, and a later request runs again.
#[test]
fn duplicate_requests_join_the_running_command() {
    let d = dir("coalesce");
    let gate = d.0.join("gate");
    let p = d.0.join("mender");
    let log = d.0.join("calls");
    // Runs until the test removes the gate file (bounded: 30 s).
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\ni=0\nwhile [ -e '{}' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\nexit 0\n",
            log.display(),
            gate.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&gate, b"").unwrap();
    let settings = Arc::new(Settings { candidates: vec![p], ..Settings::default() });
    let in_flight = super::InFlight::default();
    let (tx, rx) = async_channel::bounded(256);
    let mut sessions: Vec<MenderClient> =
        (0..5).map(|_| MenderClient::sharing(Arc::clone(&settings), tx.clone(), in_flight.clone())).collect();
    let serve = |h: &mut MenderClient, typ: &str| {
        let req = request(typ);
        let mut out = Vec::new();
        h.serve("", &Frame::decode(&req).unwrap(), &mut out);
        out
    };
    for i in 0..25 {
        assert!(serve(&mut sessions[i % 5], mc::CHECK_UPDATE).is_empty());
    }
    assert!(serve(&mut sessions[0], mc::SEND_INVENTORY).is_empty());
    // Up to MAX_WAITING wait behind the first; the next is refused at once.
    for i in 25..=super::MAX_WAITING {
        assert!(serve(&mut sessions[i % 5], mc::CHECK_UPDATE).is_empty());
    }
    let refused = serve(&mut sessions[1], mc::CHECK_UPDATE);
    assert_eq!(refused.len(), 1);
    let f = Frame::decode(&refused[0]).unwrap();
    assert_eq!(f.header.props.get_i64(mc::PROP_STATUS), Some(2));
    assert_eq!(
        String::from_utf8_lossy(f.body),
        format!("too many requests waiting for check-update (at most {})", super::MAX_WAITING)
    );
    assert_eq!(in_flight.running(), 2);

    std::fs::remove_file(&gate).unwrap();
    let mut replies = Vec::new();
    while replies.len() < super::MAX_WAITING + 2 {
        let r = smol::block_on(futures_lite::FutureExt::or(async { rx.recv().await.ok() }, async {
            smol::Timer::after(Duration::from_secs(30)).await;
            None
        }))
        .expect("a request got no reply");
        let f = Frame::decode(&r).unwrap();
        replies.push((f.header.typ.to_owned(), f.header.props.get_i64(mc::PROP_STATUS)));
    }
    let checks = replies.iter().filter(|r| *r == &(mc::CHECK_UPDATE.to_owned(), Some(1))).count();
    assert_eq!(checks, super::MAX_WAITING + 1, "{replies:?}");
    assert!(replies.contains(&(mc::SEND_INVENTORY.to_owned(), Some(1))));
    let calls = || {
        let mut v: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(calls(), ["check-update", "send-inventory"]);
    assert_eq!(in_flight.running(), 0);
    // Finished: the next request runs the client again.
    assert!(serve(&mut sessions[2], mc::CHECK_UPDATE).is_empty());
    let r = smol::block_on(rx.recv()).unwrap();
    let f = Frame::decode(&r).unwrap();
    assert_eq!((f.header.typ, f.header.props.get_i64(mc::PROP_STATUS)), (mc::CHECK_UPDATE, Some(1)));
    assert_eq!(calls(), ["check-update", "check-update", "send-inventory"]);
}
