//! File transfer through the agent binary: handshake lists protocol 2, upload and download over
//! the websocket, limits from the configuration file, `FileTransfer.Disable`.

mod common;

use async_tungstenite::tungstenite::Message;
use common::{Conn, Fixture, SOON, TempDir, encode};
use futures_lite::StreamExt;
use mender_connect_core::Frame;
use mender_connect_core::control::{self, Accept, Open};
use mender_connect_core::filetransfer::{self as ft, FtError, UploadRequest};
use mender_connect_core::frame::Prop;

const FT: u16 = 2;

async fn open_session(conn: &mut Conn, sid: &str) -> Vec<u16> {
    let mut buf = vec![0u8; 1024];
    let n = control::encode_open_frame(&mut buf, sid, &Open::new(&[1]).unwrap()).unwrap();
    conn.send(buf[..n].to_vec()).await;
    let m = conn.recv_until("accept", |m| m.proto == 0xFFFF && m.sid == sid).await;
    assert_eq!(m.typ, "accept", "{}", m.body_str());
    Accept::decode(&m.body).unwrap().protocols().iter().map(|p| p.0).collect()
}

fn body(req: &UploadRequest<'_>) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    let n = req.encode(&mut b).unwrap();
    b.truncate(n);
    b
}

fn path_body(path: &str) -> Vec<u8> {
    body(&UploadRequest { path: Some(path), ..Default::default() })
}

/// A file-transfer frame from the agent, raw (other messages such as pings are skipped).
struct Raw(Vec<u8>);

impl Raw {
    fn frame(&self) -> Frame<'_> {
        Frame::decode_any_size(&self.0).unwrap()
    }
    fn typ(&self) -> String {
        self.frame().header.typ.to_owned()
    }
    fn err(&self) -> String {
        let f = self.frame();
        assert_eq!(f.header.typ, ft::ERROR, "not an error");
        FtError::decode(f.body).unwrap().err.unwrap_or_default().to_owned()
    }
}

async fn next_ft(conn: &mut Conn, sid: &str) -> Raw {
    let got = common::timeout(SOON, async {
        loop {
            match conn.ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    let f = Frame::decode_any_size(&b).unwrap();
                    if f.header.proto.0 == FT && f.header.sid == sid {
                        return Some(Raw(b.to_vec()));
                    }
                }
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .flatten();
    got.expect("no file-transfer message from the agent in time")
}

async fn upload(conn: &mut Conn, sid: &str, path: &str, data: &[u8]) -> Result<(), String> {
    conn.send(encode(
        FT,
        ft::PUT_FILE,
        sid,
        &[],
        &body(&UploadRequest { path: Some(path), ..Default::default() }),
    ))
    .await;
    let m = next_ft(conn, sid).await;
    if m.typ() == ft::ERROR {
        return Err(m.err());
    }
    assert_eq!(m.typ(), ft::ACK);
    let mut off = 0i64;
    for (i, c) in data.chunks(4096).enumerate() {
        conn.send(encode(FT, ft::FILE_CHUNK, sid, &[Prop::int64("offset", off)], c)).await;
        // The agent acks every 10th chunk; an error would be the next message either way.
        if (i + 1) % 10 == 0 {
            let m = next_ft(conn, sid).await;
            if m.typ() == ft::ERROR {
                return Err(m.err());
            }
        }
        off += c.len() as i64;
    }
    conn.send(encode(FT, ft::FILE_CHUNK, sid, &[Prop::int64("offset", off)], &[])).await;
    let m = next_ft(conn, sid).await;
    if m.typ() == ft::ERROR { Err(m.err()) } else { Ok(()) }
}

async fn download(conn: &mut Conn, sid: &str, path: &str) -> Result<Vec<u8>, String> {
    conn.send(encode(FT, ft::GET_FILE, sid, &[], &path_body(path))).await;
    let mut data = Vec::new();
    loop {
        let m = next_ft(conn, sid).await;
        if m.typ() == ft::ERROR {
            return Err(m.err());
        }
        let f = m.frame();
        assert_eq!(f.header.typ, ft::FILE_CHUNK);
        let off = f.header.props.get_int("offset").and_then(|i| i.as_go_int64()).expect("int64 offset");
        assert_eq!(off, data.len() as i64);
        data.extend_from_slice(f.body);
        if f.body.is_empty() {
            if off > 0 {
                conn.send(encode(FT, ft::ACK, sid, &[Prop::int64("offset", off)], &[])).await;
            }
            return Ok(data);
        }
        conn.send(encode(FT, ft::ACK, sid, &[Prop::int64("offset", off)], &[])).await;
    }
}

#[test]
fn upload_and_download_through_the_daemon() {
    smol::block_on(async {
        let fx = Fixture::start("ft-daemon", r#""FileTransfer":{"Disable":false}"#, &[]).await;
        let files = TempDir::new("ft-daemon-files");
        let mut conn = fx.server.accept(SOON).await;
        let protocols = open_session(&mut conn, "f1").await;
        assert!(protocols.contains(&FT), "accept lists {protocols:?}");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect();
        let target = files.path().join("up.bin").to_string_lossy().into_owned();
        upload(&mut conn, "f1", &target, &data).await.unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), data);
        assert_eq!(download(&mut conn, "f1", &target).await.unwrap(), data);
        let missing = files.path().join("missing").to_string_lossy().into_owned();
        let e = download(&mut conn, "f1", &missing).await.unwrap_err();
        assert!(e.ends_with("no such file or directory"), "{e}");
    });
}

#[test]
fn chroot_from_the_config_file() {
    smol::block_on(async {
        let files = TempDir::new("ft-daemon-chroot");
        std::fs::create_dir(files.path().join("jail")).unwrap();
        std::fs::write(files.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(files.path().join("secret"), files.path().join("jail/link")).unwrap();
        let extra = format!(
            r#""Limits":{{"Enabled":true,"FileTransfer":{{"Chroot":"{}","FollowSymLinks":true,"AllowOverwrite":true}}}}"#,
            files.path().join("jail").display()
        );
        let fx = Fixture::start("ft-daemon-chroot", &extra, &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        open_session(&mut conn, "f2").await;
        let link = files.path().join("jail/link").to_string_lossy().into_owned();
        let e = download(&mut conn, "f2", &link).await.unwrap_err();
        assert_eq!(e, "access denied: the target file path is outside chroot");
        let escape = format!("{}/../escaped", files.path().join("jail").display());
        let e = upload(&mut conn, "f2", &escape, b"x").await.unwrap_err();
        assert_eq!(e, "access denied: the target file path is outside chroot");
        assert!(!files.path().join("escaped").exists());
        let inside = files.path().join("jail/ok").to_string_lossy().into_owned();
        upload(&mut conn, "f2", &inside, b"fine").await.unwrap();
        assert_eq!(std::fs::read(&inside).unwrap(), b"fine");
    });
}

#[test]
fn disabled_file_transfer_is_not_offered() {
    smol::block_on(async {
        let fx = Fixture::start("ft-daemon-off", r#""FileTransfer":{"Disable":true}"#, &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        let protocols = open_session(&mut conn, "f3").await;
        assert!(!protocols.contains(&FT), "accept lists {protocols:?}");
        conn.send(encode(FT, ft::STAT, "f3", &[], &path_body("/etc/hostname"))).await;
        let m = conn.recv_until("error", |m| m.sid == "f3" && m.typ == "error").await;
        let err = control::ControlError::decode(&m.body).unwrap();
        assert_eq!(err.err, "no handler registered for protocol: 0x0002");
    });
}

/// A quick measurement, not a test: `cargo test -p mender-connect --test filetransfer_daemon -- --ignored --nocapture`.
#[test]
#[ignore = "measurement (100 MiB each way)"]
fn throughput_100_mib() {
    smol::block_on(async {
        let fx = Fixture::start("ft-throughput", "", &[]).await;
        let files = TempDir::new("ft-throughput-files");
        let mut conn = fx.server.accept(SOON).await;
        open_session(&mut conn, "t").await;
        const SIZE: usize = 100 << 20;
        let block: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let target = files.path().join("big").to_string_lossy().into_owned();
        let start = std::time::Instant::now();
        conn.send(encode(
            FT,
            ft::PUT_FILE,
            "t",
            &[],
            &body(&UploadRequest { path: Some(&target), ..Default::default() }),
        ))
        .await;
        assert_eq!(next_ft(&mut conn, "t").await.typ(), ft::ACK);
        // Up to 20 chunks ahead of the last ack, as the server pipelines; an ack carries the
        // offset of the chunk it answers, so `acked` counts the chunks up to and including it.
        let (mut sent, mut acked) = (0usize, 0usize);
        let chunks = SIZE / 4096;
        while acked <= chunks {
            if sent <= chunks && sent < acked + 20 {
                let data: &[u8] = if sent < chunks { &block } else { &[] };
                conn.send(encode(
                    FT,
                    ft::FILE_CHUNK,
                    "t",
                    &[Prop::int64("offset", (sent * 4096) as i64)],
                    data,
                ))
                .await;
                sent += 1;
            } else {
                let m = next_ft(&mut conn, "t").await;
                assert_eq!(
                    m.typ(),
                    ft::ACK,
                    "{}",
                    if m.typ() == ft::ERROR { m.err() } else { String::new() }
                );
                let offset = m.frame().header.props.get_i64("offset").unwrap();
                acked = usize::try_from(offset).unwrap() / 4096 + 1;
            }
        }
        let up = start.elapsed();
        assert_eq!(std::fs::metadata(&target).unwrap().len(), SIZE as u64);
        let start = std::time::Instant::now();
        let got = download(&mut conn, "t", &target).await.unwrap();
        let down = start.elapsed();
        assert_eq!(got.len(), SIZE);
        let mib = |d: std::time::Duration| 100.0 / d.as_secs_f64();
        println!(
            "put 100 MiB: {up:?} ({:.1} MiB/s); get 100 MiB: {down:?} ({:.1} MiB/s)",
            mib(up),
            mib(down)
        );
    });
}

/// `kill -9` of the agent halfway through a 100 MiB upload over an existing file: the target keeps
/// its old content and no partial or temporary file is left in the directory.
#[test]
fn agent_killed_mid_upload_leaves_the_target_untouched() {
    smol::block_on(async {
        let fx = Fixture::start("ft-kill", "", &[]).await;
        let files = TempDir::new("ft-kill-files");
        let target = files.path().join("big.bin");
        std::fs::write(&target, b"the old content").unwrap();
        let mut conn = fx.server.accept(SOON).await;
        open_session(&mut conn, "k1").await;

        let path = target.to_string_lossy().into_owned();
        conn.send(encode(FT, ft::PUT_FILE, "k1", &[], &path_body(&path))).await;
        assert_eq!(next_ft(&mut conn, "k1").await.typ(), ft::ACK);
        // 50 of the announced 100 MiB, acknowledged (every 10th chunk): the agent holds an
        // open transfer.
        let chunk = vec![0xa5u8; 4096];
        let mut off = 0i64;
        for i in 0..(50 * 1024 * 1024 / chunk.len()) {
            conn.send(encode(FT, ft::FILE_CHUNK, "k1", &[Prop::int64("offset", off)], &chunk)).await;
            if (i + 1) % 10 == 0 {
                let m = next_ft(&mut conn, "k1").await;
                assert_ne!(m.typ(), ft::ERROR, "{}", m.err());
            }
            off += chunk.len() as i64;
        }
        fx.agent.signal("KILL");
        let mut agent = fx.agent;
        assert_eq!(agent.wait_exit(), None, "killed by a signal, no exit code");

        assert_eq!(std::fs::read(&target).unwrap(), b"the old content");
        let names: Vec<_> =
            std::fs::read_dir(files.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("big.bin")], "leftovers in the target directory");
    });
}
