//! The smallest useful device build of the protocol core, for its flash and RAM figures
//! (footprint.sh): every protocol (control, shell, file transfer, port forward, mender client),
//! the session table at its default capacity, the transfer window, backoff, keep-alive and rate
//! counters, and one receive and one transmit buffer of `MAX_FRAME_LEN`.
//!
//! It plays one scripted session: each request is copied into the receive buffer, hidden from
//! the optimiser (`black_box`, as if it came from the network), decoded and answered; the
//! answers go to an opaque sink. No `core::fmt`: panics end the run without a message.
#![no_std]
#![no_main]

use core::hint::black_box;
use mender_connect_core::backoff::{Backoff, BackoffConfig};
use mender_connect_core::control::{self, Accept, ControlError, ControlMessage};
use mender_connect_core::filetransfer::{self as ft, FileInfo, FileTransferMessage};
use mender_connect_core::frame::{Frame, Proto, MAX_FRAME_LEN};
use mender_connect_core::keepalive::{Keepalive, KeepaliveAction, KeepaliveConfig};
use mender_connect_core::menderclient::{self as mc, MenderClientMessage};
use mender_connect_core::portforward::{self as pf, PortForwardMessage};
use mender_connect_core::rate::RateCounters;
use mender_connect_core::sessions::{SessionConfig, SessionTable, DEFAULT_CAPACITY};
use mender_connect_core::shell::{self, ShellMessage, Status};
use mender_connect_core::time::Instant;
use mender_connect_core::transfer::{ChunkOutcome, DownloadWindow, UploadState};
use mender_connect_mcu_tests::{exit, stack_used, write_str, write_usize};

/// Everything the device keeps between frames.
struct Device {
    sessions: SessionTable<DEFAULT_CAPACITY>,
    download: DownloadWindow,
    upload: UploadState,
    backoff: Backoff,
    keepalive: Keepalive,
    rate: RateCounters,
    rx: [u8; MAX_FRAME_LEN],
    tx: [u8; MAX_FRAME_LEN],
    sent: usize,
}

impl Device {
    fn new(now: Instant) -> Self {
        Self {
            sessions: SessionTable::new(SessionConfig::default()),
            download: DownloadWindow::new(),
            upload: UploadState::new(),
            backoff: Backoff::new(BackoffConfig::default()),
            keepalive: Keepalive::new(KeepaliveConfig::default(), now),
            rate: RateCounters::new(now),
            rx: [0; MAX_FRAME_LEN],
            tx: [0; MAX_FRAME_LEN],
            sent: 0,
        }
    }

    /// Hands `n` bytes of `tx` to the (opaque) websocket.
    fn send(&mut self, n: Result<usize, mender_connect_core::EncodeError>) {
        if let Ok(n) = n {
            self.rate.tx.add(n as u64);
            black_box(&self.tx[..n]);
            self.sent += 1;
        }
    }

    /// One received websocket message of `len` bytes in `rx`.
    fn on_message(&mut self, len: usize, now: Instant) {
        self.keepalive.on_data(now);
        self.rate.rx.add(len as u64);
        let rx = black_box(&self.rx[..len]);
        let Ok(f) = Frame::decode(rx) else { return };
        let tx = &mut self.tx;
        let n = match f.header.proto {
            Proto::CONTROL => match ControlMessage::from_frame(&f) {
                Ok(ControlMessage::Open(o)) if o.supports(control::PROTOCOL_VERSION) => {
                    let accept = Accept::new(control::PROTOCOL_VERSION, &[1, 2, 3, 4]).unwrap_or_default();
                    control::encode_accept_frame(tx, f.header.sid, &accept)
                }
                Ok(ControlMessage::Ping) => control::bare(control::PONG, f.header.sid).encode(tx),
                Ok(ControlMessage::Close) => return,
                _ => {
                    let e = ControlError { err: "session: control type message not understood", ..Default::default() };
                    control::encode_error_frame(tx, f.header.sid, &e)
                }
            },
            Proto::SHELL => match ShellMessage::from_frame(&f) {
                Ok(ShellMessage::New { user_id, .. }) => match self.sessions.open(f.header.sid, user_id, now) {
                    Ok(()) => shell::encode_with_status(tx, shell::NEW, f.header.sid, Status::Normal, b"Shell started"),
                    Err(_) => shell::encode_with_status(tx, shell::NEW, f.header.sid, Status::Error, b"refused"),
                },
                Ok(ShellMessage::Data(d)) => {
                    let _ = self.sessions.touch(f.header.sid, now);
                    shell::encode_with_status(tx, shell::SHELL, f.header.sid, Status::Normal, d)
                }
                Ok(ShellMessage::Stop { .. }) => match self.sessions.close(f.header.sid) {
                    Ok(_) => shell::encode_with_status(tx, shell::STOP, f.header.sid, Status::Normal, b""),
                    Err(_) => return,
                },
                Ok(ShellMessage::Resize(_) | ShellMessage::Pong) => return,
                _ => shell::encode_ping(tx, f.header.sid, 65),
            },
            Proto::FILE_TRANSFER => match FileTransferMessage::from_frame(&f) {
                Ok(FileTransferMessage::Stat(s)) => {
                    let info = FileInfo { path: s.path, size: Some(5), mode: Some(0o644), ..Default::default() };
                    ft::encode_file_info(tx, f.header.sid, &info)
                }
                Ok(FileTransferMessage::GetFile(_)) => {
                    self.download = DownloadWindow::new();
                    let n = self.download.next_chunk_len().min(5);
                    let offset = self.download.on_sent(n);
                    ft::encode_chunk(tx, f.header.sid, offset, &b"hello"[..n])
                }
                Ok(FileTransferMessage::Ack { offset }) => match self.download.on_ack(offset) {
                    Ok(()) => ft::encode_chunk(tx, f.header.sid, self.download.on_eof(), b""),
                    Err(_) => ft::encode_error_reply(tx, &f, "invalid offset"),
                },
                Ok(FileTransferMessage::PutFile(_)) => {
                    self.upload = UploadState::new();
                    ft::encode_ack(tx, f.header.sid, 0)
                }
                Ok(FileTransferMessage::Chunk { offset, data }) => match self.upload.on_chunk(offset, data.len()) {
                    Ok(ChunkOutcome::Data { .. }) if !self.upload.should_ack(false) => return,
                    Ok(_) => ft::encode_ack_of(tx, &f),
                    Err(_) => ft::encode_coded_error_reply(tx, &f, "bad chunk", 400),
                },
                _ => ft::encode_error_reply(tx, &f, "not supported"),
            },
            Proto::PORT_FORWARD => match PortForwardMessage::from_frame(&f) {
                Ok(PortForwardMessage::New { connection_id, request }) => match request.target() {
                    Some(_) => pf::encode(tx, pf::ACK, f.header.sid, connection_id, b""),
                    None => pf::encode_error(tx, f.header.sid, pf::NEW, "invalid target"),
                },
                Ok(PortForwardMessage::Forward { connection_id, data }) => {
                    pf::encode(tx, pf::FORWARD, f.header.sid, connection_id, data)
                }
                Ok(PortForwardMessage::Ack { .. } | PortForwardMessage::Stop { .. }) => return,
                _ => pf::encode_error(tx, f.header.sid, f.header.typ, "unknown message"),
            },
            Proto::MENDER_CLIENT => match MenderClientMessage::from_frame(&f) {
                Ok(m) if m.command().is_some() => mc::encode_reply(tx, &f, None),
                _ => mc::encode_reply(tx, &f, Some(mc::UNKNOWN_TYPE_ERROR)),
            },
            _ => return,
        };
        self.send(n);
    }

    /// Timers: keep-alive, rate ticks, session expiry.
    fn on_timer(&mut self, now: Instant) {
        if self.keepalive.poll(now) == KeepaliveAction::TimedOut {
            black_box(self.backoff.next_delay_ms(black_box(0x1234_5678)));
        }
        self.rate.poll(now);
        for gone in self.sessions.take_expired(now) {
            let n = shell::encode_with_status(&mut self.tx, shell::STOP, &gone.sid, Status::Normal, b"");
            self.send(n);
        }
    }
}

/// The scripted session, as the server sends it (made with core's own encoders; 1668 bytes).
const REQUESTS: [&[u8]; 17] = [
    // control open (version 1)
    b"\x82\xa3hdr\x83\xa5proto\xcd\xff\xff\xa3typ\xa4open\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa4body\xc4\x0c\x81\xa8versions\x91\x01",
    // shell new
    b"\x81\xa3hdr\x84\xa5proto\xcd\x00\x01\xa3typ\xa3new\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xa7user_id\xa6user-1",
    // shell data "ls -l\n"
    b"\x82\xa3hdr\x84\xa5proto\xcd\x00\x01\xa3typ\xa5shell\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xa7user_id\xa6user-1\xa4body\xc4\x06ls -l\x0a",
    // shell resize
    b"\x81\xa3hdr\x84\xa5proto\xcd\x00\x01\xa3typ\xa6resize\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xa7user_id\xa6user-1",
    // file transfer stat /etc/hosts
    b"\x82\xa3hdr\x84\xa5proto\xcd\x00\x02\xa3typ\xa4stat\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xa7user_id\xa6user-1\xa4body\xc4\x11\x81\xa4path\xaa/etc/hosts",
    // file transfer get_file /etc/hosts
    b"\x82\xa3hdr\x84\xa5proto\xcd\x00\x02\xa3typ\xa8get_file\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xa7user_id\xa6user-1\xa4body\xc4\x11\x81\xa4path\xaa/etc/hosts",
    // file transfer ack offset 5
    b"\x81\xa3hdr\x84\xa5proto\xcd\x00\x02\xa3typ\xa3ack\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xa6offset\xd3\x00\x00\x00\x00\x00\x00\x00\x05",
    // file transfer put_file /tmp/x
    b"\x82\xa3hdr\x84\xa5proto\xcd\x00\x02\xa3typ\xa8put_file\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xa7user_id\xa6user-1\xa4body\xc4\x17\x82\xa4path\xa6/tmp/x\xa4mode\xce\x00\x00\x01\x80",
    // file transfer chunk "data" at 0
    b"\x82\xa3hdr\x84\xa5proto\xcd\x00\x02\xa3typ\xaafile_chunk\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xa6offset\xd3\x00\x00\x00\x00\x00\x00\x00\x00\xa4body\xc4\x04data",
    // file transfer chunk at 4, empty: end of file
    b"\x81\xa3hdr\x84\xa5proto\xcd\x00\x02\xa3typ\xaafile_chunk\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xa6offset\xd3\x00\x00\x00\x00\x00\x00\x00\x04",
    // port forward new localhost:22/tcp
    b"\x82\xa3hdr\x84\xa5proto\xcd\x00\x03\xa3typ\xa3new\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xadconnection_id\xa2c1\xa4body\xc43\x83\xabremote_host\xa9localhost\xabremote_port\xcd\x00\x16\xa8protocol\xa3tcp",
    // port forward forward
    b"\x82\xa3hdr\x84\xa5proto\xcd\x00\x03\xa3typ\xa7forward\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xadconnection_id\xa2c1\xa4body\xc4\x0bSSH-2.0-x\x0d\x0a",
    // port forward stop
    b"\x81\xa3hdr\x84\xa5proto\xcd\x00\x03\xa3typ\xa4stop\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xadconnection_id\xa2c1",
    // mender client check-update
    b"\x81\xa3hdr\x84\xa5proto\xcd\x00\x04\xa3typ\xaccheck-update\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xa7user_id\xa6user-1",
    // control ping
    b"\x81\xa3hdr\x83\xa5proto\xcd\xff\xff\xa3typ\xa4ping\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1",
    // shell stop
    b"\x81\xa3hdr\x84\xa5proto\xcd\x00\x01\xa3typ\xa4stop\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1\xa5props\x81\xa7user_id\xa6user-1",
    // control close
    b"\x81\xa3hdr\x83\xa5proto\xcd\xff\xff\xa3typ\xa5close\xa3sid\xd9$0c9ba6e1-4d2b-4c56-9b0c-6fd1d2a4e3f1",
];

/// Replies the script must produce: every request but resize, port-forward stop and close.
const EXPECTED_REPLIES: usize = 14;

#[unsafe(no_mangle)]
extern "C" fn mcu_main() -> ! {
    let mut now = Instant::from_millis(0);
    let mut dev = Device::new(now);
    for req in black_box(&REQUESTS) {
        // As a websocket read would: the message lands in the receive buffer.
        dev.rx[..req.len()].copy_from_slice(req);
        dev.on_message(req.len(), now);
        now = now.add_millis(1_000);
        dev.on_timer(now);
    }
    // Idle for an hour: keep-alive times out, sessions would expire, rate counters tick.
    dev.on_timer(now.add_millis(3_600_000));
    write_str("footprint: device state ");
    write_usize(core::mem::size_of::<Device>());
    write_str(" bytes (of which rx+tx buffers ");
    write_usize(2 * MAX_FRAME_LEN);
    write_str("), replies ");
    write_usize(dev.sent);
    write_str(", stack high-water ");
    write_usize(stack_used());
    write_str(" bytes\n");
    exit(dev.sent == EXPECTED_REPLIES)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    write_str("footprint: panic\n");
    exit(false)
}
