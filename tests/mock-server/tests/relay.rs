//! Device and user websockets: relay, session ids, user_id injection, exclusivity, stop notices,
//! mender-client commands.

mod common;

use common::*;
use rmpv::Value;
use tungstenite::Message;

const SHELL: u16 = 1;

fn connect_path(id: &str) -> String {
    format!("/api/management/v1/deviceconnect/devices/{id}/connect")
}

const DEVICE_WS: &str = "/api/devices/v1/deviceconnect/connect";

#[test]
fn user_to_device_rewrite_and_device_to_user_verbatim() {
    let srv = Server::start(&[]);
    let user = srv.login();
    let user_id = jwt_claims(&user)["sub"].as_str().expect("sub").to_owned();
    let (dev_id, dev_token) = srv.device("relay");
    let mut device = srv.ws(DEVICE_WS, &dev_token);
    srv.wait_status(&dev_id, &user, "connected");
    let mut usr = srv.ws(&connect_path(&dev_id), &user);

    // The user claims a sid and a user_id; both are overwritten. Other props keep their bytes:
    // a positive fixint stays a fixint, an explicit int64 stays int64.
    let mut m = Vec::new();
    // {"hdr": {"proto": 1, "typ": "new", "sid": "mine", "props": {"terminal_width": 80 (fixint),
    //  "timeout": int64 7, "user_id": "evil"}}, "body": "x" (str)}
    m.extend_from_slice(&[0x82, 0xa3]);
    m.extend_from_slice(b"hdr");
    m.push(0x84);
    m.extend_from_slice(&[0xa5]);
    m.extend_from_slice(b"proto");
    m.push(0x01);
    m.push(0xa3);
    m.extend_from_slice(b"typ");
    m.push(0xa3);
    m.extend_from_slice(b"new");
    m.push(0xa3);
    m.extend_from_slice(b"sid");
    m.push(0xa4);
    m.extend_from_slice(b"mine");
    m.push(0xa5);
    m.extend_from_slice(b"props");
    m.push(0x83);
    m.push(0xae);
    m.extend_from_slice(b"terminal_width");
    m.push(80);
    m.push(0xa7);
    m.extend_from_slice(b"timeout");
    m.extend_from_slice(&[0xd3, 0, 0, 0, 0, 0, 0, 0, 7]);
    m.push(0xa7);
    m.extend_from_slice(b"user_id");
    m.push(0xa4);
    m.extend_from_slice(b"evil");
    m.push(0xa4);
    m.extend_from_slice(b"body");
    m.push(0xa1);
    m.push(b'x');
    send_bin(&mut usr, m);

    let got = read_bin(&mut device);
    let p = parse(&got);
    assert_eq!(p.proto, 1);
    assert_eq!(p.typ, "new");
    assert_ne!(p.sid, "mine");
    assert_eq!(p.sid.len(), 36, "server-assigned UUID session id");
    assert_eq!(p.prop_str("user_id"), Some(user_id.as_str()));
    assert_eq!(bytes_after_key(&got, "terminal_width").map(|b| b[0]), Some(80));
    assert_eq!(bytes_after_key(&got, "timeout").map(|b| &b[..9]), Some(&[0xd3, 0, 0, 0, 0, 0, 0, 0, 7][..]));
    // proto is written as uint16 and the body as bin, as the Go server does.
    assert_eq!(bytes_after_key(&got, "proto").map(|b| &b[..3]), Some(&[0xcd, 0, 1][..]));
    assert_eq!(bytes_after_key(&got, "body").map(|b| &b[..3]), Some(&[0xc4, 1, b'x'][..]));
    let sid = p.sid.clone();

    // A message with only a header: no body key reaches the device.
    send_bin(&mut usr, msg(SHELL, "start", "", vec![("status", Value::from("ok"))], None));
    let got = read_bin(&mut device);
    let v = decode(&got);
    assert!(get(&v, "body").is_none());
    let p = parse(&got);
    assert_eq!((p.sid.as_str(), p.prop_str("status")), (sid.as_str(), Some("ok")));

    // Device → user: byte-for-byte, including unusual encodings (map16, str8, key order).
    let mut reply = vec![0xde, 0x00, 0x02, 0xa4];
    reply.extend_from_slice(b"body");
    reply.extend_from_slice(&[0xd9, 0x02, b'h', b'i']);
    reply.push(0xa3);
    reply.extend_from_slice(b"hdr");
    reply.push(0x84);
    reply.push(0xa3);
    reply.extend_from_slice(b"sid");
    reply.push(0xd9);
    reply.push(sid.len() as u8);
    reply.extend_from_slice(sid.as_bytes());
    reply.push(0xa5);
    reply.extend_from_slice(b"proto");
    reply.extend_from_slice(&[0xcd, 0, 1]);
    reply.push(0xa3);
    reply.extend_from_slice(b"typ");
    reply.push(0xa5);
    reply.extend_from_slice(b"shell");
    reply.push(0xa5);
    reply.extend_from_slice(b"props");
    reply.push(0x81);
    reply.push(0xa6);
    reply.extend_from_slice(b"status");
    reply.extend_from_slice(&[0xd3, 0, 0, 0, 0, 0, 0, 0, 1]);
    send_bin(&mut device, reply.clone());
    assert_eq!(read_bin(&mut usr), reply);

    // A message for another session id is not delivered to this user.
    send_bin(&mut device, msg(SHELL, "shell", "someone-else", vec![], Some(b"leak")));
    let marker = msg(SHELL, "shell", &sid, vec![], Some(b"marker"));
    send_bin(&mut device, marker.clone());
    assert_eq!(read_bin(&mut usr), marker);

    // One session id per user socket: a second socket gets a different one.
    let mut usr2 = srv.ws(&connect_path(&dev_id), &user);
    send_bin(&mut usr2, msg(SHELL, "ping", "", vec![], None));
    let p2 = parse(&read_bin(&mut device));
    assert_ne!(p2.sid, sid);
    assert_eq!(p2.typ, "ping");
}

#[test]
fn user_close_with_running_shell_sends_stop() {
    let srv = Server::start(&[]);
    let user = srv.login();
    let user_id = jwt_claims(&user)["sub"].as_str().expect("sub").to_owned();
    let (dev_id, dev_token) = srv.device("stop");
    let mut device = srv.ws(DEVICE_WS, &dev_token);
    srv.wait_status(&dev_id, &user, "connected");

    // No shell started: closing sends nothing; the next message the device sees comes from the next user.
    let mut quiet = srv.ws(&connect_path(&dev_id), &user);
    send_bin(&mut quiet, msg(SHELL, "resize", "", vec![], None));
    assert_eq!(parse(&read_bin(&mut device)).typ, "resize");
    quiet.close(None).expect("close");
    let _ = quiet.read();

    let mut usr = srv.ws(&connect_path(&dev_id), &user);
    send_bin(&mut usr, msg(SHELL, "new", "", vec![], None));
    let sid = parse(&read_bin(&mut device)).sid;
    usr.close(None).expect("close");
    let _ = usr.read();
    let stop = read_bin(&mut device);
    let p = parse(&stop);
    assert_eq!((p.proto, p.typ.as_str(), p.sid.as_str()), (1, "stop", sid.as_str()));
    assert_eq!(p.body, b"user disconnected");
    assert_eq!(p.prop_i64("status"), Some(2));
    assert_eq!(p.prop_str("user_id"), Some(user_id.as_str()));
    assert_eq!(
        bytes_after_key(&stop, "status").map(|b| b[0]),
        Some(0x02),
        "status as Go msgpack v5 writes a named int"
    );

    // A shell stopped by the user before closing: no extra stop.
    let mut usr = srv.ws(&connect_path(&dev_id), &user);
    send_bin(&mut usr, msg(SHELL, "new", "", vec![], None));
    let _ = read_bin(&mut device);
    send_bin(&mut usr, msg(SHELL, "stop", "", vec![], None));
    assert_eq!(parse(&read_bin(&mut device)).typ, "stop");
    drop(usr);
    let mut usr = srv.ws(&connect_path(&dev_id), &user);
    send_bin(&mut usr, msg(SHELL, "resize", "", vec![], None));
    assert_eq!(parse(&read_bin(&mut device)).typ, "resize");
}

#[test]
fn exclusive_device_connection_and_status_versions() {
    let srv = Server::start(&[]);
    let user = srv.login();
    let (dev_id, dev_token) = srv.device("excl");
    let mut first = srv.ws(DEVICE_WS, &dev_token);
    srv.wait_status(&dev_id, &user, "connected");
    let mut second = srv.ws(DEVICE_WS, &dev_token);
    // The older socket is closed by the server with 1011.
    let close = loop {
        match first.read() {
            Ok(Message::Close(c)) => break c,
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    };
    let close = close.expect("close frame with a code");
    assert_eq!(u16::from(close.code), 1011);
    assert_eq!(close.reason.as_str(), "connection closed by the server");
    drop(first);
    // The stale connection's end must not mark the device disconnected.
    let mut usr = srv.ws(&connect_path(&dev_id), &user);
    send_bin(&mut usr, msg(SHELL, "new", "", vec![], None));
    let p = parse(&read_bin(&mut second));
    assert_eq!(p.typ, "new");
    let (_, v) = srv.get_json(&format!("/api/management/v1/deviceconnect/devices/{dev_id}"), &user);
    assert_eq!(v["status"], "connected");

    // The device answers `new`; when its socket ends, the user is told.
    send_bin(
        &mut second,
        msg(SHELL, "new", &p.sid, vec![("status", Value::from(1))], Some(b"Shell started")),
    );
    assert_eq!(parse(&read_bin(&mut usr)).typ, "new");
    second.close(None).expect("close");
    let _ = second.read();
    let notice = parse(&read_bin(&mut usr));
    assert_eq!((notice.typ.as_str(), notice.body.as_slice()), ("stop", &b"device disconnected"[..]));
    assert_eq!(notice.prop_i64("status"), Some(2));
    srv.wait_status(&dev_id, &user, "disconnected");

    // A disconnected device refuses new user sockets with R's texts.
    let r = srv.http("GET", &connect_path(&dev_id), &[("Authorization", &format!("Bearer {user}"))], b"");
    assert_eq!((r.status, r.error().as_str()), (404, "device not connected"));
    let r = srv.http("GET", &connect_path("nope"), &[("Authorization", &format!("Bearer {user}"))], b"");
    assert_eq!((r.status, r.error().as_str()), (404, "device not found"));
}

#[test]
fn upgrade_errors_and_auth() {
    let srv = Server::start(&[]);
    let user = srv.login();
    let (dev_id, dev_token) = srv.device("upg");
    // Not a websocket request on the device endpoint.
    let r = srv.http("GET", DEVICE_WS, &[("Authorization", &format!("Bearer {dev_token}"))], b"");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("the client is not using the websocket protocol"), "{}", r.error());
    // Bad tokens.
    assert!(ws_connect(&srv.addr, DEVICE_WS, "garbage").is_err());
    assert!(ws_connect(&srv.addr, DEVICE_WS, &user).is_err());
    assert!(ws_connect(&srv.addr, &connect_path(&dev_id), &dev_token).is_err());
    let mut device = srv.ws(DEVICE_WS, &dev_token);
    srv.wait_status(&dev_id, &user, "connected");
    let r = srv.http("GET", &connect_path(&dev_id), &[("Authorization", &format!("Bearer {user}"))], b"");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("the client is not using the websocket protocol"));
    // A shell message without a session id is a protocol error (R closes the device socket with 1011).
    send_bin(&mut device, msg(SHELL, "shell", "", vec![], Some(b"x")));
    let close = loop {
        match device.read() {
            Ok(Message::Close(c)) => break c,
            Ok(_) => continue,
            Err(e) => panic!("expected close: {e}"),
        }
    };
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1011));
}

#[test]
fn check_update_and_send_inventory() {
    let srv = Server::start(&[]);
    let user = srv.login();
    let user_id = jwt_claims(&user)["sub"].as_str().expect("sub").to_owned();
    let (dev_id, dev_token) = srv.device("cmd");
    let post = |cmd: &str| {
        srv.http(
            "POST",
            &format!("/api/management/v1/deviceconnect/devices/{dev_id}/{cmd}"),
            &[("Authorization", &format!("Bearer {user}"))],
            b"",
        )
    };
    let r = post("check-update");
    assert_eq!(r.status, 409, "disconnected device");
    let r = srv.http(
        "POST",
        "/api/management/v1/deviceconnect/devices/unknown/check-update",
        &[("Authorization", &format!("Bearer {user}"))],
        b"",
    );
    assert_eq!((r.status, r.error().as_str()), (404, "device not found"));

    let mut device = srv.ws(DEVICE_WS, &dev_token);
    srv.wait_status(&dev_id, &user, "connected");
    for cmd in ["check-update", "send-inventory"] {
        let r = post(cmd);
        assert_eq!((r.status, r.text().as_str()), (202, "null"));
        let raw = read_bin(&mut device);
        let p = parse(&raw);
        assert_eq!((p.proto, p.typ.as_str(), p.sid.as_str()), (4, cmd, ""));
        assert_eq!(p.prop_str("user_id"), Some(user_id.as_str()));
        let v = decode(&raw);
        assert!(get(&v, "body").is_none());
        assert!(get(get(&v, "hdr").expect("hdr"), "sid").is_none(), "empty sid is omitted");
        // The device's reply has no session and goes nowhere; the socket stays up.
        send_bin(&mut device, msg(4, cmd, "", vec![("status", Value::from(1))], None));
    }
    srv.wait_status(&dev_id, &user, "connected");
}

#[test]
fn device_receives_server_pings() {
    let srv = Server::start(&["--ping-interval", "1"]);
    let (_, dev_token) = srv.device("ping");
    let mut device = srv.ws(DEVICE_WS, &dev_token);
    let got = loop {
        match device.read() {
            Ok(Message::Ping(p)) => break p,
            Ok(_) => continue,
            Err(e) => panic!("expected a ping: {e}"),
        }
    };
    assert_eq!(&got[..], b"60");
}

#[test]
fn session_playback_replays_shell_output_and_stays_open() {
    let srv = Server::start(&["--playback-sleep-ms", "0"]);
    let user = srv.login();
    let (dev_id, dev_token) = srv.device("play");
    let mut device = srv.ws(DEVICE_WS, &dev_token);
    srv.wait_status(&dev_id, &user, "connected");
    let mut usr = srv.ws(&connect_path(&dev_id), &user);
    send_bin(&mut usr, msg(SHELL, "new", "", vec![], None));
    let sid = parse(&read_bin(&mut device)).sid;
    let big: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut live = Vec::new();
    for body in [&b"$ echo now you see me\r\n"[..], &big, b"now you see me\r\n$ "] {
        send_bin(&mut device, msg(SHELL, "shell", &sid, vec![], Some(body)));
        live.extend_from_slice(&parse(&read_bin(&mut usr)).body);
    }
    // Non-output messages are not recorded.
    send_bin(&mut device, msg(SHELL, "pong", &sid, vec![], Some(b"ignored")));
    let _ = read_bin(&mut usr);
    drop(usr);

    let mut play = srv.ws(&format!("/api/management/v1/deviceconnect/sessions/{sid}/playback"), &user);
    let mut replay = Vec::new();
    while replay.len() < live.len() {
        let p = parse(&read_bin(&mut play));
        assert_eq!((p.proto, p.sid.as_str()), (1, sid.as_str()));
        if p.typ == "shell" {
            assert!(p.body.len() <= 1024);
            replay.extend_from_slice(&p.body);
        }
    }
    assert_eq!(replay, live);
    // The server keeps the socket open after the last message.
    play.get_mut().set_read_timeout(Some(std::time::Duration::from_millis(500))).expect("timeout");
    match play.read() {
        Err(tungstenite::Error::Io(e)) => {
            assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e}")
        }
        other => panic!("expected the socket to stay open and silent, got {other:?}"),
    }
}

#[test]
fn session_byte_limit_stops_the_shell() {
    let srv = Server::start(&["--session-byte-limit", "10000"]);
    let user = srv.login();
    let (dev_id, dev_token) = srv.device("limit");
    let mut device = srv.ws(DEVICE_WS, &dev_token);
    srv.wait_status(&dev_id, &user, "connected");
    let mut usr = srv.ws(&connect_path(&dev_id), &user);
    send_bin(&mut usr, msg(SHELL, "new", "", vec![], None));
    let sid = parse(&read_bin(&mut device)).sid;
    let chunk = vec![b'x'; 4000];
    // 3 × 4000 bytes reach the user (the limit is checked before each output message).
    for _ in 0..3 {
        send_bin(&mut device, msg(SHELL, "shell", &sid, vec![], Some(&chunk)));
        assert_eq!(parse(&read_bin(&mut usr)).body.len(), 4000);
    }
    send_bin(&mut device, msg(SHELL, "shell", &sid, vec![], Some(&chunk)));
    let stop = parse(&read_bin(&mut device));
    assert_eq!((stop.typ.as_str(), stop.body.as_slice()), ("stop", &b"session byte limit exceeded"[..]));
    assert_eq!(stop.prop_i64("status"), Some(2));
    let notice = parse(&read_bin(&mut usr));
    assert_eq!((notice.typ.as_str(), notice.body.as_slice()), ("shell", &b"session byte limit exceeded"[..]));
    assert_eq!(notice.prop_i64("status"), Some(2));
    // Later output is not forwarded; other messages still are.
    send_bin(&mut device, msg(SHELL, "shell", &sid, vec![], Some(b"late")));
    send_bin(&mut device, msg(SHELL, "stop", &sid, vec![], None));
    assert_eq!(parse(&read_bin(&mut usr)).typ, "stop");
}

#[test]
fn internal_deviceconnect_endpoints() {
    let srv = Server::start(&[]);
    let user = srv.login();
    let base = "/api/internal/v1/deviceconnect";
    assert_eq!(srv.http("GET", &format!("{base}/alive"), &[], b"").status, 204);
    let r = srv.http("POST", &format!("{base}/tenants/t1/devices"), &[], br#"{"device_id":""}"#);
    assert_eq!((r.status, r.error().as_str()), (400, "device_id is empty"));
    let r = srv.http("POST", &format!("{base}/tenants/t1/devices"), &[], br#"{"device_id":"dev-1"}"#);
    assert_eq!(r.status, 201);
    let (code, v) = srv.get_json("/api/management/v1/deviceconnect/devices/dev-1", &user);
    assert_eq!((code, v["status"].as_str()), (200, Some("disconnected")));
    assert_eq!(srv.http("DELETE", &format!("{base}/tenants/t1/devices/dev-1"), &[], b"").status, 202);
    let (code, _) = srv.get_json("/api/management/v1/deviceconnect/devices/dev-1", &user);
    assert_eq!(code, 404);
}
