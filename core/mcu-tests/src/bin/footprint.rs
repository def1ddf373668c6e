//! The smallest useful device build of the protocol core, for its flash and RAM figures
//! (footprint.sh): the device engine (`core::device`: link supervision with backoff, control
//! sessions: handshake, idle ping and timeout, routing; the shell session, port-forward
//! connection and file-transfer tables composed in) for 16 control sessions, 16 shells, the
//! port-forward table at its default capacity and 2 transfers, every protocol (shell, file
//! transfer, port forward, mender client; the tables driven as an executor drives them),
//! keep-alive and rate counters, a receive buffer of `MAX_FRAME_LEN` and the engine's reply
//! buffer (`REPLY_BUF_LEN`).
//!
//! It plays one scripted session: each request is copied into the receive buffer, hidden from
//! the optimiser (`black_box`, as if it came from the network), decoded and answered; the
//! answers go to an opaque sink. No `core::fmt`: panics end the run without a message.
#![no_std]
#![no_main]

use core::hint::black_box;
use mender_connect_core::control_sessions::IdleConfig;
use mender_connect_core::device::{Action as DeviceAction, Delivered, FixedDevice};
use mender_connect_core::engine::{
    Action as EngineAction, Config as EngineConfig, FixedEngine, REPLY_BUF_LEN, Routed,
};
use mender_connect_core::filetransfer::{self as ft, FileInfo};
use mender_connect_core::forwards::{
    Action as ForwardAction, DEFAULT_MAX_CONNECTIONS, FixedForwards, ForwardConfig, ForwardTable, queue_len,
};
use mender_connect_core::frame::{MAX_FRAME_LEN, Proto};
use mender_connect_core::keepalive::{Keepalive, KeepaliveAction, KeepaliveConfig};
use mender_connect_core::link::{CredentialsUpdate, DEFAULT_DISCONNECT_GRACE_MS, LinkAction, LinkConfig};
use mender_connect_core::menderclient::{self as mc, MenderClientMessage};
use mender_connect_core::portforward as pf;
use mender_connect_core::rate::RateCounters;
use mender_connect_core::shell::{self, Status};
use mender_connect_core::shells::{self as shells, Action as ShellAction, DefaultShellTable, ShellConfig};
use mender_connect_core::time::Instant;
use mender_connect_core::transfers::{self, DefaultTransferTable, TransferConfig};
use mender_connect_mcu_tests::{exit, stack_used, write_str, write_usize};

/// The port-forward table's storage at its default capacity (`PortForward.MaxConnections`).
type Forwards = FixedForwards<DEFAULT_MAX_CONNECTIONS, { queue_len(DEFAULT_MAX_CONNECTIONS) }>;

/// Control sessions the device keeps at once (the agent on Linux allows 1024).
const CONTROL_SESSIONS: usize = 16;
/// Protocols served inside control sessions.
const SERVED: &[Proto] = &[Proto::FILE_TRANSFER, Proto::PORT_FORWARD, Proto::MENDER_CLIENT];
/// Shells at once (the reference's `MaxShellsSpawned`).
const SHELLS: usize = mender_connect_core::sessions::DEFAULT_CAPACITY;
type Engine = FixedDevice<CONTROL_SESSIONS, SHELLS, { shells::queue_len(SHELLS) }, Forwards>;

/// Everything the device keeps between frames.
struct Device {
    engine: Engine,
    /// Bytes of the one "file" (`hello`) read by the running download.
    read: usize,
    keepalive: Keepalive,
    rate: RateCounters,
    rx: [u8; MAX_FRAME_LEN],
    /// The engine's reply buffer: every reply fits (an error echoes an incoming frame's ids).
    tx: [u8; REPLY_BUF_LEN],
    sent: usize,
}

impl Device {
    fn new(now: Instant) -> Self {
        Self {
            read: 0,
            engine: Engine::new(
                &EngineConfig {
                    link: LinkConfig::new(1_000, 60_000, DEFAULT_DISCONNECT_GRACE_MS, false),
                    idle: IdleConfig::default(),
                    terminal: true,
                    served: SERVED,
                },
                ShellConfig::default(),
                black_box(0x1234_5678),
            )
            .with_forwards(ForwardConfig::default()),
            keepalive: Keepalive::new(KeepaliveConfig::default(), now),
            rate: RateCounters::new(now),
            rx: [0; MAX_FRAME_LEN],
            tx: [0; REPLY_BUF_LEN],
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

    /// Carries out the engine's actions (the "websocket" always connects at once; a "shell"
    /// here is only the engine's replies).
    fn engine_actions(&mut self, now: Instant) {
        while let Some(a) = self.engine.poll_action(&mut self.tx) {
            match a {
                DeviceAction::Engine(EngineAction::Send { len, .. })
                | DeviceAction::SendShell { len }
                | DeviceAction::SendForward { len } => self.send(Ok(len)),
                DeviceAction::Engine(EngineAction::Link(LinkAction::Dial)) => {
                    self.engine.handle_connected(now)
                }
                // The "target" accepts every dial; sockets are the executor's, so closing and
                // reading more are nothing here.
                DeviceAction::Forward(ForwardAction::Dial { sid, cid }) => {
                    self.engine.handle_forward_dialed(&sid, &cid, true, now);
                }
                DeviceAction::SendTransfer { len } => self.send(Ok(len)),
                // The "file system": every download reads `hello`, every upload commits.
                DeviceAction::Transfer(transfers::Action::Read { sid, max }) => {
                    let file = b"hello";
                    let data = &file[self.read..file.len().min(self.read + max)];
                    self.read += data.len();
                    if let Some(n) = self.engine.handle_transfer_read(&sid, data, now, &mut self.tx) {
                        self.send(Ok(n));
                    }
                }
                DeviceAction::Transfer(transfers::Action::Commit { sid }) => {
                    self.engine.handle_transfer_committed(&sid)
                }
                DeviceAction::Shell(ShellAction::SpawnShell { sid, serial, .. }) => {
                    self.engine.handle_shell_spawned(&sid, serial, true)
                }
                _ => {}
            }
        }
    }

    /// One received websocket message of `len` bytes in `rx`.
    fn on_message(&mut self, len: usize, now: Instant) {
        self.keepalive.on_data(now);
        self.rate.rx.add(len as u64);
        self.route(len, now);
        self.engine_actions(now);
    }

    /// The engine handles control and session bookkeeping; each protocol's messages come out
    /// for its table or handler.
    fn route(&mut self, len: usize, now: Instant) {
        let rx = black_box(&self.rx[..len]);
        let f = match self.engine.handle_frame(rx, now, &mut self.tx) {
            Delivered::Handled { reply: Some(n) }
            | Delivered::Engine(Routed::Handled { reply: Some(n), .. }) => {
                return self.send(Ok(n));
            }
            // The device's "shell" echoes the input.
            Delivered::ShellInput { sid, bytes } => {
                let n = shell::encode_with_status(&mut self.tx, shell::SHELL, sid, Status::Normal, bytes);
                return self.send(n);
            }
            Delivered::Transfer(d) => {
                match d {
                    transfers::Delivered::Handled { reply: Some(n) } => self.send(Ok(n)),
                    transfers::Delivered::Stat { request, path } => {
                        let info = FileInfo {
                            path: Some(path),
                            size: Some(5),
                            mode: Some(0o644),
                            ..Default::default()
                        };
                        let n = ft::encode_file_info(&mut self.tx, request.header.sid, &info);
                        self.send(n);
                    }
                    transfers::Delivered::OpenDownload { sid, .. } => {
                        self.read = 0;
                        self.engine.handle_transfer_download_opened(sid, now);
                    }
                    transfers::Delivered::OpenUpload { sid, .. } => {
                        self.engine.handle_transfer_upload_opened(sid, now)
                    }
                    transfers::Delivered::Write { sid, bytes, .. } => {
                        black_box(bytes);
                        self.engine.handle_transfer_written(sid, bytes.len(), now)
                    }
                    _ => {}
                }
                return;
            }
            // Written to the target, which answers with the same bytes at once.
            Delivered::ForwardData { sid, cid, bytes } => {
                self.engine.handle_forward_written(sid, cid, now);
                if self.engine.handle_forward_read(sid, cid, now) {
                    let n = pf::encode(&mut self.tx, pf::FORWARD, sid, cid, bytes);
                    self.send(n);
                }
                return;
            }
            Delivered::Engine(Routed::Deliver(f)) => f,
            _ => return,
        };
        let tx = &mut self.tx;
        let n = match f.header.proto {
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
            black_box(self.engine.handle_link_closed(now));
            self.keepalive = Keepalive::new(KeepaliveConfig::default(), now);
        }
        if self.engine.poll_timeout().is_some_and(|at| at <= now) {
            self.engine.handle_timeout(now);
        }
        self.engine_actions(now);
        self.rate.poll(now);
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

/// Replies the script must produce: one per request but resize (none) and close (none), the
/// port-forward `forward` (the table's `ack` and the target's echo), `get_file` (the chunk and
/// the end-of-file chunk), the final `ack` of the download (none) and the upload's data chunk
/// (none: acked with the end of file).
const EXPECTED_REPLIES: usize = 15;

#[unsafe(no_mangle)]
extern "C" fn mcu_main() -> ! {
    let mut now = Instant::from_millis(0);
    let mut dev = Device::new(now);
    dev.engine.serve_transfers(TransferConfig::default(), now);
    dev.engine.handle_credentials(CredentialsUpdate::Changed, now);
    dev.engine_actions(now);
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
    write_usize(MAX_FRAME_LEN + REPLY_BUF_LEN);
    write_str("; engine ");
    write_usize(core::mem::size_of::<Engine>());
    write_str(" for ");
    write_usize(CONTROL_SESSIONS);
    write_str(" control sessions and ");
    write_usize(SHELLS);
    write_str(" shells and ");
    write_usize(mender_connect_core::device::DEFAULT_TRANSFERS);
    write_str(" transfers: link and control sessions ");
    write_usize(core::mem::size_of::<FixedEngine<CONTROL_SESSIONS>>());
    write_str(", shell table ");
    write_usize(core::mem::size_of::<DefaultShellTable>());
    write_str(", port-forward table ");
    write_usize(core::mem::size_of::<ForwardTable<Forwards>>());
    write_str(", transfer table ");
    write_usize(core::mem::size_of::<DefaultTransferTable>());
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
