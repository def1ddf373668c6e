//! Malformed input from the server, through the real agent binary: ≥ 100 seeded frames of each
//! kind (truncated MessagePack, wrong types, wrong integer widths, unknown proto/typ, unknown
//! session, huge props, oversize). After every frame the test sends a control `ping` on a
//! barrier session and collects everything up to its `pong`, so it checks the complete answer
//! to each frame (including "no answer"), on the same websocket. Afterwards a new shell must
//! still work.
//!
//! Expected answers are those of mender-connect 2.1.0:
//! - `app/daemon.go` `routeMessage`: shell (1) messages of an unknown type get the same
//!   proto/typ/sid with `status` 2 and body `unknown message protocol and type: 1/<typ>`; every
//!   other proto goes to the session router;
//! - `app/daemon_shell.go`: `shell` for an unknown sid → status 2 `session not found`; `stop` →
//!   status 2 `routeMessage: StopShellMessage: session not found for id <sid>`; `resize` and
//!   `pong` for an unknown sid → nothing (logged);
//! - `session/session.go` (`ListenAndServe`, `HandleControl`, `Error`): `ping` → `pong`; a proto
//!   without a route → control `error` `no handler registered for protocol: 0x%04X` (close
//!   false, msgproto/msgtype/msgid of the message); unknown control typ → `session: control type
//!   message not understood: '<typ>'`; undecodable `open` → `failed to decode handshake request:
//!   ...` with close true; undecodable `accept` → `malformed handshake response: ...` close true;
//!   `close`, `pong` and an undecodable `error` → nothing;
//! - `session/filetransfer.go`: `ack`/`file_chunk` without a transfer → file-transfer `error`
//!   `no file transfer in progress` (request header copied, msgtype = request typ); unknown typ →
//!   `session: filetransfer message type '<typ>' not supported`; undecodable body → `malformed
//!   request parameters: ...`;
//! - `session/portforward.go`: `forward`/`ack`/`stop` for an unknown connection → port-forward
//!   `error` `unknown connection` (msgtype = request typ, no props); unknown typ → `unknown
//!   message type`; an undecodable `new` → an `error` with the decoder's text (Go's msgpack text
//!   differs from ours; only the shape is compared);
//! - `session/menderclient.go`: unknown typ → same proto/typ/sid, status 2, `unknown message type`.
//!
//! Deliberate difference: a message that is not a ProtoMsg at all (truncated, wrong types in the
//! frame itself, oversize) makes the reference drop the websocket (`connection.ReadMessage` error
//! or gorilla's 8192-byte read limit → `messageLoop` reconnects). This agent answers a control
//! `error` `failed to decode message: ...` with an empty sid instead and keeps the link
//! (agent/src/proto/router.rs).

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::{Conn, Fixture, Msg, SOON, encode};
use mender_connect_core::control::{Accept, ControlError};
use mender_connect_core::filetransfer::FtError;
use mender_connect_core::frame::{Frame, Prop};
use mender_connect_core::portforward::PfError;

const CONTROL: u16 = 0xFFFF;
const BARRIER: &str = "barrier";
/// Frames generated per kind.
const PER_KIND: usize = 120;

/// A tiny MessagePack writer that picks integer widths explicitly.
#[derive(Default)]
struct Mp(Vec<u8>);

#[derive(Clone, Copy, Debug)]
enum W {
    Fix,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
}

const WIDTHS: [W; 9] = [W::Fix, W::U8, W::U16, W::U32, W::U64, W::I8, W::I16, W::I32, W::I64];

impl W {
    /// Whether `v` (non-negative) is representable.
    fn fits(self, v: u64) -> bool {
        match self {
            W::Fix => v < 128,
            W::U8 => v <= u64::from(u8::MAX),
            W::U16 => v <= u64::from(u16::MAX),
            W::U32 => v <= u64::from(u32::MAX),
            W::U64 => true,
            W::I8 => v <= 127,
            W::I16 => v <= 32767,
            W::I32 => v <= i32::MAX as u64,
            W::I64 => v <= i64::MAX as u64,
        }
    }
}

impl Mp {
    fn uint(&mut self, v: u64, w: W) -> &mut Self {
        assert!(w.fits(v), "{v} in {w:?}");
        let b = &mut self.0;
        match w {
            W::Fix => b.push(v as u8),
            W::U8 => b.extend_from_slice(&[0xcc, v as u8]),
            W::U16 => {
                b.push(0xcd);
                b.extend_from_slice(&(v as u16).to_be_bytes());
            }
            W::U32 => {
                b.push(0xce);
                b.extend_from_slice(&(v as u32).to_be_bytes());
            }
            W::U64 => {
                b.push(0xcf);
                b.extend_from_slice(&v.to_be_bytes());
            }
            W::I8 => b.extend_from_slice(&[0xd0, v as u8]),
            W::I16 => {
                b.push(0xd1);
                b.extend_from_slice(&(v as i16).to_be_bytes());
            }
            W::I32 => {
                b.push(0xd2);
                b.extend_from_slice(&(v as i32).to_be_bytes());
            }
            W::I64 => {
                b.push(0xd3);
                b.extend_from_slice(&(v as i64).to_be_bytes());
            }
        }
        self
    }

    fn map(&mut self, n: usize) -> &mut Self {
        if n < 16 {
            self.0.push(0x80 | n as u8);
        } else {
            self.0.push(0xde);
            self.0.extend_from_slice(&(n as u16).to_be_bytes());
        }
        self
    }

    fn arr(&mut self, n: usize) -> &mut Self {
        if n < 16 {
            self.0.push(0x90 | n as u8);
        } else {
            self.0.push(0xdc);
            self.0.extend_from_slice(&(n as u16).to_be_bytes());
        }
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        let n = s.len();
        if n < 32 {
            self.0.push(0xa0 | n as u8);
        } else if n < 256 {
            self.0.extend_from_slice(&[0xd9, n as u8]);
        } else {
            self.0.push(0xda);
            self.0.extend_from_slice(&(n as u16).to_be_bytes());
        }
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    fn bin(&mut self, b: &[u8]) -> &mut Self {
        if b.len() < 256 {
            self.0.extend_from_slice(&[0xc4, b.len() as u8]);
        } else {
            self.0.push(0xc5);
            self.0.extend_from_slice(&(b.len() as u16).to_be_bytes());
        }
        self.0.extend_from_slice(b);
        self
    }

    fn nil(&mut self) -> &mut Self {
        self.0.push(0xc0);
        self
    }

    fn bool(&mut self, v: bool) -> &mut Self {
        self.0.push(if v { 0xc3 } else { 0xc2 });
        self
    }

    fn f64(&mut self, v: f64) -> &mut Self {
        self.0.push(0xcb);
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// One encoded value.
fn val(f: impl FnOnce(&mut Mp)) -> Vec<u8> {
    let mut m = Mp::default();
    f(&mut m);
    m.0
}

/// A frame from pre-encoded parts: `proto` (any encoding), optional typ/sid/props/body values.
struct Raw<'a> {
    proto: Vec<u8>,
    typ: Option<Vec<u8>>,
    sid: Option<Vec<u8>>,
    props: Option<Vec<u8>>,
    body: Option<Vec<u8>>,
    extra: &'a [(&'a str, Vec<u8>)],
}

impl Raw<'_> {
    fn new(proto: u16) -> Self {
        Raw {
            proto: val(|m| {
                m.uint(u64::from(proto), W::U16);
            }),
            typ: None,
            sid: None,
            props: None,
            body: None,
            extra: &[],
        }
    }

    fn typ(mut self, t: &str) -> Self {
        self.typ = Some(val(|m| {
            m.str(t);
        }));
        self
    }

    fn sid(mut self, s: &str) -> Self {
        self.sid = Some(val(|m| {
            m.str(s);
        }));
        self
    }

    fn body_bin(mut self, b: &[u8]) -> Self {
        self.body = Some(val(|m| {
            m.bin(b);
        }));
        self
    }

    fn encode(&self) -> Vec<u8> {
        let mut m = Mp::default();
        let hdr_fields = 1
            + usize::from(self.typ.is_some())
            + usize::from(self.sid.is_some())
            + usize::from(self.props.is_some());
        m.map(1 + usize::from(self.body.is_some()) + self.extra.len());
        m.str("hdr").map(hdr_fields).str("proto").raw(&self.proto);
        for (k, v) in [("typ", &self.typ), ("sid", &self.sid), ("props", &self.props)] {
            if let Some(v) = v {
                m.str(k).raw(v);
            }
        }
        if let Some(b) = &self.body {
            m.str("body").raw(b);
        }
        for (k, v) in self.extra {
            m.str(k).raw(v);
        }
        m.0
    }
}

/// Text of an error answer: exact, or only its beginning where Go's decoder words it differently.
#[derive(Clone, Debug)]
enum Text {
    Exact(String),
    Prefix(&'static str),
    /// Any non-empty text.
    Some,
}

impl Text {
    fn check(&self, got: &str, what: &str) {
        match self {
            Text::Exact(t) => assert_eq!(got, t, "{what}"),
            Text::Prefix(p) => assert!(got.starts_with(p), "{what}: {got:?} does not start with {p:?}"),
            Text::Some => assert!(!got.is_empty(), "{what}: empty error text"),
        }
    }
}

/// What the reference answers to one frame.
#[derive(Clone, Debug)]
enum Expect {
    Nothing,
    Pong {
        sid: String,
    },
    Accept {
        sid: String,
    },
    Control {
        sid: String,
        close: bool,
        err: Text,
        msgproto: Option<u16>,
        msgtype: Option<String>,
        msgid: Option<String>,
    },
    /// A shell or mender-client answer: same proto/typ/sid, status 2, the text as body.
    Status2 {
        proto: u16,
        typ: String,
        sid: String,
        body: String,
    },
    Ft {
        sid: String,
        msgtype: String,
        err: Text,
    },
    Pf {
        sid: String,
        msgtype: String,
        err: Text,
    },
}

impl Expect {
    fn label(&self) -> &'static str {
        match self {
            Expect::Nothing => "no answer",
            Expect::Pong { .. } => "control pong",
            Expect::Accept { .. } => "control accept",
            Expect::Control { close: true, .. } => "control error (close)",
            Expect::Control { .. } => "control error",
            Expect::Status2 { proto: 1, .. } => "shell status 2",
            Expect::Status2 { .. } => "mender-client status 2",
            Expect::Ft { .. } => "file-transfer error",
            Expect::Pf { .. } => "port-forward error",
        }
    }

    fn undecodable() -> Self {
        Expect::Control {
            sid: String::new(),
            close: false,
            err: Text::Prefix("failed to decode message: "),
            msgproto: None,
            msgtype: None,
            msgid: None,
        }
    }

    fn check(&self, got: &[Msg], what: &str) {
        if let Expect::Nothing = self {
            assert!(got.is_empty(), "{what}: expected no answer, got {got:?}");
            return;
        }
        assert_eq!(got.len(), 1, "{what}: expected one answer ({self:?}), got {got:?}");
        let m = &got[0];
        match self {
            Expect::Nothing => {}
            Expect::Pong { sid } => {
                assert_eq!(
                    (m.proto, m.typ.as_str(), m.sid.as_str()),
                    (CONTROL, "pong", sid.as_str()),
                    "{what}"
                );
            }
            Expect::Accept { sid } => {
                assert_eq!(
                    (m.proto, m.typ.as_str(), m.sid.as_str()),
                    (CONTROL, "accept", sid.as_str()),
                    "{what}"
                );
                let a = Accept::decode(&m.body).expect("accept body");
                assert_eq!(a.version, 1, "{what}");
                let mut protos: Vec<u16> = a.protocols().iter().map(|p| p.0).collect();
                protos.sort_unstable();
                assert_eq!(protos, [1, 2, 3, 4], "{what}");
            }
            Expect::Control { sid, close, err, msgproto, msgtype, msgid } => {
                assert_eq!(
                    (m.proto, m.typ.as_str(), m.sid.as_str()),
                    (CONTROL, "error", sid.as_str()),
                    "{what}: {m:?}"
                );
                let e = ControlError::decode(&m.body).expect("control error body");
                err.check(e.err, what);
                assert_eq!(e.close, *close, "{what}: close");
                assert_eq!(e.msgproto.0, msgproto.unwrap_or(0), "{what}: msgproto");
                assert_eq!(e.msgtype, msgtype.as_deref().unwrap_or(""), "{what}: msgtype");
                assert_eq!(e.msgid, msgid.as_deref().unwrap_or(""), "{what}: msgid");
            }
            Expect::Status2 { proto, typ, sid, body } => {
                assert_eq!(
                    (m.proto, m.typ.as_str(), m.sid.as_str()),
                    (*proto, typ.as_str(), sid.as_str()),
                    "{what}"
                );
                assert_eq!(m.status, Some(2), "{what}");
                assert_eq!(&m.body_str(), body, "{what}");
            }
            Expect::Ft { sid, msgtype, err } => {
                assert_eq!(
                    (m.proto, m.typ.as_str(), m.sid.as_str()),
                    (2, "error", sid.as_str()),
                    "{what}: {m:?}"
                );
                let e = FtError::decode(&m.body).expect("file-transfer error body");
                err.check(e.err.unwrap_or(""), what);
                assert_eq!(e.msgtype, Some(msgtype.as_str()), "{what}: msgtype");
            }
            Expect::Pf { sid, msgtype, err } => {
                assert_eq!(
                    (m.proto, m.typ.as_str(), m.sid.as_str()),
                    (3, "error", sid.as_str()),
                    "{what}: {m:?}"
                );
                assert!(m.props.is_empty(), "{what}: the reference sends no props");
                let e = PfError::decode(&m.body).expect("port-forward error body");
                err.check(e.err.unwrap_or(""), what);
                assert_eq!(e.msgtype, Some(msgtype.as_str()), "{what}: msgtype");
            }
        }
    }
}

/// A generated case.
struct Case {
    frame: Vec<u8>,
    expect: Expect,
}

struct Gen {
    rng: fastrand::Rng,
    n: u64,
}

impl Gen {
    fn sid(&mut self, tag: &str) -> String {
        self.n += 1;
        format!("{tag}-{}-{:08x}", self.n, self.rng.u32(..))
    }

    fn word(&mut self) -> String {
        let len = self.rng.usize(1..16);
        let mut s = String::from("x-");
        s.extend((0..len).map(|_| {
            self.rng.choice(b"abcdefghijklmnopqrstuvwxyz_-".iter()).map_or('a', |c| char::from(*c))
        }));
        s
    }

    /// Valid frames as the server sends them, to cut short.
    fn templates(&mut self) -> Vec<Vec<u8>> {
        let sid = self.sid("t");
        let user = [Prop::str("user_id", "u1")];
        let size = [
            Prop::str("user_id", "u1"),
            Prop::uint16("terminal_width", 80),
            Prop::uint16("terminal_height", 24),
        ];
        let off = [Prop::int64("offset", 4096)];
        let conn = [Prop::str("connection_id", "c1")];
        let open = val(|m| {
            m.map(1).str("versions").arr(1).uint(1, W::Fix);
        });
        let put = val(|m| {
            m.map(4)
                .str("src_path")
                .str("a.bin")
                .str("path")
                .str("/tmp/x")
                .str("size")
                .uint(10, W::I64)
                .str("mode")
                .uint(0o644, W::U32);
        });
        let pf_new = val(|m| {
            m.map(3)
                .str("remote_host")
                .str("127.0.0.1")
                .str("remote_port")
                .uint(22, W::U16)
                .str("protocol")
                .str("tcp");
        });
        vec![
            encode(CONTROL, "open", &sid, &[], &open),
            encode(CONTROL, "ping", &sid, &[], b""),
            encode(1, "new", &sid, &size, b""),
            encode(1, "shell", &sid, &user, b"echo hello\n"),
            encode(2, "put_file", &sid, &user, &put),
            encode(2, "file_chunk", &sid, &off, &[7u8; 300]),
            encode(3, "new", &sid, &conn, &pf_new),
            encode(4, "check-update", "", &user, b""),
        ]
    }

    fn truncated(&mut self) -> Case {
        let t = self.templates();
        let f = &t[self.rng.usize(..t.len())];
        let cut = f[..self.rng.usize(..f.len())].to_vec();
        assert!(Frame::decode(&cut).is_err(), "a cut frame must not decode: {cut:02x?}");
        Case { frame: cut, expect: Expect::undecodable() }
    }

    /// A value of a type other than the ones the field takes (never one Go would convert).
    fn wrong_value(&mut self, field: &str) -> Vec<u8> {
        let k = self.rng.usize(..5);
        val(|m| {
            match (field, k) {
                // proto: uint16
                ("proto", 0) => m.str("1"),
                ("proto", 1) => m.bool(true),
                ("proto", 2) => m.f64(1.0),
                ("proto", 3) => m.arr(1).uint(1, W::Fix),
                ("proto", _) => m.map(0),
                // typ, sid: string (Go also takes bin; that is not a wrong type)
                (_, 0) if field == "typ" || field == "sid" => m.uint(5, W::Fix),
                (_, 1) if field == "typ" || field == "sid" => m.bool(false),
                (_, 2) if field == "typ" || field == "sid" => m.arr(1).str("new"),
                (_, 3) if field == "typ" || field == "sid" => m.map(0),
                (_, _) if field == "typ" || field == "sid" => m.f64(2.5),
                // props: map[string]interface{}
                ("props", 0) => m.arr(2).str("user_id").str("u1"),
                ("props", 1) => m.str("user_id=u1"),
                ("props", 2) => m.uint(7, W::U32),
                ("props", 3) => m.bool(true),
                ("props", _) => m.map(1).uint(1, W::Fix).str("int key"),
                // body: []byte (Go also takes str)
                (_, 0) => m.uint(300, W::U16),
                (_, 1) => m.map(1).str("a").str("b"),
                (_, 2) => m.arr(0),
                (_, 3) => m.bool(true),
                (_, _) => m.f64(0.5),
            };
        })
    }

    fn wrong_type(&mut self) -> Case {
        let sid = self.sid("wt");
        match self.rng.usize(..10) {
            // The frame itself: not a ProtoMsg.
            0..=3 => {
                let field =
                    *self.rng.choice(["proto", "typ", "sid", "props", "body"].iter()).unwrap_or(&"proto");
                let bad = self.wrong_value(field);
                let mut raw = Raw::new(1).typ("shell").sid(&sid).body_bin(b"ls\n");
                match field {
                    "proto" => raw.proto = bad,
                    "typ" => raw.typ = Some(bad),
                    "sid" => raw.sid = Some(bad),
                    "props" => raw.props = Some(bad),
                    _ => raw.body = Some(bad),
                }
                Case { frame: raw.encode(), expect: Expect::undecodable() }
            }
            4 => {
                // Top level or hdr not a map (Go refuses these; arrays are left out because Go
                // decodes an array into a struct by position).
                let frame = match self.rng.usize(..4) {
                    0 => val(|m| {
                        m.str("hdr");
                    }),
                    1 => val(|m| {
                        m.uint(1, W::U8);
                    }),
                    2 => val(|m| {
                        m.map(1).str("hdr").str("proto");
                    }),
                    _ => val(|m| {
                        m.map(1).str("hdr").uint(1, W::Fix);
                    }),
                };
                Case { frame, expect: Expect::undecodable() }
            }
            // Control bodies.
            5 | 6 => {
                let open = self.rng.bool();
                let typ = if open { "open" } else { "accept" };
                let field = if open { "versions" } else { "version" };
                let bad = match self.rng.usize(..4) {
                    0 => val(|m| {
                        m.str("1");
                    }),
                    1 => val(|m| {
                        m.bool(true);
                    }),
                    2 => val(|m| {
                        m.map(0);
                    }),
                    _ if open => val(|m| {
                        m.arr(2).uint(1, W::Fix).str("2");
                    }),
                    _ => val(|m| {
                        m.arr(1).uint(1, W::Fix);
                    }),
                };
                let body = val(|m| {
                    m.map(1).str(field).raw(&bad);
                });
                let err = if open {
                    "failed to decode handshake request: "
                } else {
                    "malformed handshake response: "
                };
                Case {
                    frame: encode(CONTROL, typ, &sid, &[], &body),
                    expect: Expect::Control {
                        sid,
                        close: true,
                        err: Text::Prefix(err),
                        msgproto: Some(CONTROL),
                        msgtype: Some(typ.into()),
                        msgid: None,
                    },
                }
            }
            // A peer's control error that does not decode: logged, not answered.
            7 => {
                let body = val(|m| {
                    m.map(1).str("err").uint(5, W::Fix);
                });
                Case { frame: encode(CONTROL, "error", &sid, &[], &body), expect: Expect::Nothing }
            }
            // File-transfer request bodies.
            8 => {
                let typ = *self.rng.choice(["stat", "get_file", "put_file"].iter()).unwrap_or(&"stat");
                let bad = match self.rng.usize(..4) {
                    0 => val(|m| {
                        m.uint(1, W::Fix);
                    }),
                    1 => val(|m| {
                        m.bool(true);
                    }),
                    2 => val(|m| {
                        m.arr(1).str("/etc");
                    }),
                    _ => val(|m| {
                        m.map(0);
                    }),
                };
                let body = val(|m| {
                    m.map(1).str("path").raw(&bad);
                });
                Case {
                    frame: encode(2, typ, &sid, &[Prop::str("user_id", "u1")], &body),
                    expect: Expect::Ft {
                        sid,
                        msgtype: typ.into(),
                        err: Text::Prefix("malformed request parameters: "),
                    },
                }
            }
            // Port-forward `new` body.
            _ => {
                let bad = match self.rng.usize(..3) {
                    0 => val(|m| {
                        m.str("22");
                    }),
                    1 => val(|m| {
                        m.bool(true);
                    }),
                    _ => val(|m| {
                        m.arr(1).uint(22, W::Fix);
                    }),
                };
                let body = val(|m| {
                    m.map(3)
                        .str("remote_host")
                        .str("127.0.0.1")
                        .str("remote_port")
                        .raw(&bad)
                        .str("protocol")
                        .str("tcp");
                });
                Case {
                    frame: encode(3, "new", &sid, &[Prop::str("connection_id", "c1")], &body),
                    expect: Expect::Pf { sid, msgtype: "new".into(), err: Text::Some },
                }
            }
        }
    }

    fn width(&mut self, v: u64) -> W {
        loop {
            let w = *self.rng.choice(WIDTHS.iter()).unwrap_or(&W::I64);
            if w.fits(v) {
                return w;
            }
        }
    }

    /// Valid messages whose integers are written in other widths than Go writes them: Go's
    /// decoder takes any width, so the answers are the usual ones.
    fn int_width(&mut self) -> Case {
        let sid = self.sid("iw");
        let raw = |proto: u16, g: &mut Gen| {
            let w = g.width(u64::from(proto));
            let mut r = Raw::new(proto);
            r.proto = val(|m| {
                m.uint(u64::from(proto), w);
            });
            r
        };
        match self.rng.usize(..6) {
            0 => Case {
                frame: raw(CONTROL, self).typ("ping").sid(&sid).encode(),
                expect: Expect::Pong { sid },
            },
            1 => {
                let w = self.width(1);
                let body = val(|m| {
                    m.map(1).str("versions").arr(1).uint(1, w);
                });
                let mut r = raw(CONTROL, self).typ("open").sid(&sid);
                r.body = Some(val(|m| {
                    m.bin(&body);
                }));
                Case { frame: r.encode(), expect: Expect::Accept { sid } }
            }
            2 => {
                let r = raw(1, self).typ("stop").sid(&sid);
                let text = format!("routeMessage: StopShellMessage: session not found for id {sid}");
                Case {
                    frame: r.encode(),
                    expect: Expect::Status2 { proto: 1, typ: "stop".into(), sid, body: text },
                }
            }
            3 => {
                let w = self.width(4096);
                let mut r = raw(2, self).typ("ack").sid(&sid);
                r.props = Some(val(|m| {
                    m.map(1).str("offset").uint(4096, w);
                }));
                Case {
                    frame: r.encode(),
                    expect: Expect::Ft {
                        sid,
                        msgtype: "ack".into(),
                        err: Text::Exact("no file transfer in progress".into()),
                    },
                }
            }
            4 => {
                let typ = self.word();
                let r = raw(4, self).typ(&typ).sid(&sid);
                Case {
                    frame: r.encode(),
                    expect: Expect::Status2 { proto: 4, typ, sid, body: "unknown message type".into() },
                }
            }
            _ => {
                let proto = self.rng.u16(5..0xFFFF);
                let r = raw(proto, self).typ("x").sid(&sid);
                Case {
                    frame: r.encode(),
                    expect: Expect::Control {
                        sid,
                        close: false,
                        err: Text::Exact(format!("no handler registered for protocol: 0x{proto:04X}")),
                        msgproto: Some(proto),
                        msgtype: Some("x".into()),
                        msgid: None,
                    },
                }
            }
        }
    }

    fn unknown_proto_typ(&mut self) -> Case {
        let sid = self.sid("up");
        let typ = self.word();
        let user = [Prop::str("user_id", "u1")];
        match self.rng.usize(..6) {
            0 => {
                // 0 (unset) and everything unassigned go to the session router.
                let proto = if self.rng.u8(..8) == 0 { 0 } else { self.rng.u16(5..0xFFFF) };
                let msgid = self.rng.bool().then(|| format!("{}", self.rng.u32(..)));
                let mut props = user.to_vec();
                if let Some(id) = &msgid {
                    props.push(Prop::str("msgid", id));
                }
                Case {
                    frame: encode(proto, &typ, &sid, &props, b"payload"),
                    expect: Expect::Control {
                        sid,
                        close: false,
                        err: Text::Exact(format!("no handler registered for protocol: 0x{proto:04X}")),
                        msgproto: Some(proto),
                        msgtype: Some(typ),
                        msgid,
                    },
                }
            }
            1 => Case {
                frame: encode(CONTROL, &typ, &sid, &[], b""),
                expect: Expect::Control {
                    sid,
                    close: false,
                    err: Text::Exact(format!("session: control type message not understood: '{typ}'")),
                    msgproto: Some(CONTROL),
                    msgtype: Some(typ),
                    msgid: None,
                },
            },
            2 => Case {
                frame: encode(1, &typ, &sid, &user, b"x"),
                expect: Expect::Status2 {
                    proto: 1,
                    body: format!("unknown message protocol and type: 1/{typ}"),
                    typ,
                    sid,
                },
            },
            3 => Case {
                frame: encode(2, &typ, &sid, &user, b""),
                expect: Expect::Ft {
                    sid,
                    err: Text::Exact(format!("session: filetransfer message type '{typ}' not supported")),
                    msgtype: typ,
                },
            },
            4 => Case {
                frame: encode(3, &typ, &sid, &[Prop::str("connection_id", "c1")], b""),
                expect: Expect::Pf { sid, msgtype: typ, err: Text::Exact("unknown message type".into()) },
            },
            _ => Case {
                frame: encode(4, &typ, &sid, &user, b""),
                expect: Expect::Status2 { proto: 4, typ, sid, body: "unknown message type".into() },
            },
        }
    }

    fn unknown_session(&mut self) -> Case {
        let sid = self.sid("us");
        let user = [Prop::str("user_id", "u1")];
        let conn = [Prop::str("connection_id", "c9")];
        match self.rng.usize(..10) {
            0 => Case {
                frame: encode(1, "shell", &sid, &user, b"id\n"),
                expect: Expect::Status2 {
                    proto: 1,
                    typ: "shell".into(),
                    sid,
                    body: "session not found".into(),
                },
            },
            1 => {
                let body = format!("routeMessage: StopShellMessage: session not found for id {sid}");
                Case {
                    frame: encode(1, "stop", &sid, &user, b""),
                    expect: Expect::Status2 { proto: 1, typ: "stop".into(), sid, body },
                }
            }
            2 => {
                let typ = if self.rng.bool() { "resize" } else { "pong" };
                let props = [
                    Prop::str("user_id", "u1"),
                    Prop::uint16("terminal_width", 80),
                    Prop::uint16("terminal_height", 24),
                ];
                Case { frame: encode(1, typ, &sid, &props, b""), expect: Expect::Nothing }
            }
            3 | 4 => {
                let typ = if self.rng.bool() { "ack" } else { "file_chunk" };
                Case {
                    frame: encode(2, typ, &sid, &[Prop::int64("offset", 0)], b"data"),
                    expect: Expect::Ft {
                        sid,
                        msgtype: typ.into(),
                        err: Text::Exact("no file transfer in progress".into()),
                    },
                }
            }
            5 | 6 => {
                let typ = *self.rng.choice(["forward", "ack", "stop"].iter()).unwrap_or(&"ack");
                Case {
                    frame: encode(3, typ, &sid, &conn, b"data"),
                    expect: Expect::Pf {
                        sid,
                        msgtype: typ.into(),
                        err: Text::Exact("unknown connection".into()),
                    },
                }
            }
            7 => Case { frame: encode(CONTROL, "ping", &sid, &[], b""), expect: Expect::Pong { sid } },
            8 => {
                let typ = if self.rng.bool() { "close" } else { "pong" };
                Case { frame: encode(CONTROL, typ, &sid, &[], b""), expect: Expect::Nothing }
            }
            _ => {
                Case { frame: encode(2, "error", &sid, &[], b"\x81\xa3err\xa4boom"), expect: Expect::Nothing }
            }
        }
    }

    /// A property value of any type, up to `depth` levels of nesting.
    fn any_value(&mut self, m: &mut Mp, depth: u8) {
        match self.rng.usize(..if depth == 0 { 7 } else { 9 }) {
            0 => {
                let v = self.rng.u64(..);
                let w = self.width(v);
                m.uint(v, w);
            }
            1 => {
                let s = "v".repeat(self.rng.usize(..40));
                m.str(&s);
            }
            2 => {
                let b: Vec<u8> = (0..self.rng.usize(..40)).map(|_| self.rng.u8(..)).collect();
                m.bin(&b);
            }
            3 => {
                m.nil();
            }
            4 => {
                m.bool(self.rng.bool());
            }
            5 => {
                m.f64(self.rng.f64());
            }
            6 => {
                // Negative fixint / int8.
                m.raw(&[0xff]);
            }
            7 => {
                let n = self.rng.usize(..4);
                m.arr(n);
                for _ in 0..n {
                    self.any_value(m, depth - 1);
                }
            }
            _ => {
                let n = self.rng.usize(..4);
                m.map(n);
                for i in 0..n {
                    m.str(&format!("k{i}"));
                    self.any_value(m, depth - 1);
                }
            }
        }
    }

    /// Props: `fixed` first, then `extra` generated entries, encoded as one map.
    fn big_props(&mut self, fixed: &[(&str, &str)], extra: usize, big: usize) -> Vec<u8> {
        let mut m = Mp::default();
        m.map(fixed.len() + extra + usize::from(big > 0));
        for (k, v) in fixed {
            m.str(k).str(v);
        }
        for i in 0..extra {
            m.str(&format!("p{i:04}"));
            self.any_value(&mut m, 6);
        }
        if big > 0 {
            m.str("big").str(&"B".repeat(big));
        }
        m.0
    }

    fn huge_props(&mut self) -> Case {
        let sid = self.sid("hp");
        let extra = self.rng.usize(16..120);
        let big = if self.rng.bool() { self.rng.usize(1000..3000) } else { 0 };
        let case = match self.rng.usize(..4) {
            0 => {
                let mut r = Raw::new(1).typ("shell").sid(&sid).body_bin(b"true\n");
                r.props = Some(self.big_props(&[("user_id", "u1")], extra, big));
                Case {
                    frame: r.encode(),
                    expect: Expect::Status2 {
                        proto: 1,
                        typ: "shell".into(),
                        sid,
                        body: "session not found".into(),
                    },
                }
            }
            1 => {
                let mut r = Raw::new(CONTROL).typ("ping").sid(&sid);
                r.props = Some(self.big_props(&[], extra, big));
                Case { frame: r.encode(), expect: Expect::Pong { sid } }
            }
            2 => {
                let proto = self.rng.u16(5..0xFFFF);
                let msgid = "m".repeat(self.rng.usize(1..1500));
                let mut r = Raw::new(proto).typ("t").sid(&sid);
                r.props = Some(self.big_props(&[("msgid", &msgid)], extra, big));
                Case {
                    frame: r.encode(),
                    expect: Expect::Control {
                        sid,
                        close: false,
                        err: Text::Exact(format!("no handler registered for protocol: 0x{proto:04X}")),
                        msgproto: Some(proto),
                        msgtype: Some("t".into()),
                        msgid: Some(msgid),
                    },
                }
            }
            _ => {
                let mut r = Raw::new(3).typ("forward").sid(&sid).body_bin(b"data");
                r.props = Some(self.big_props(&[("connection_id", "c9")], extra, big));
                Case {
                    frame: r.encode(),
                    expect: Expect::Pf {
                        sid,
                        msgtype: "forward".into(),
                        err: Text::Exact("unknown connection".into()),
                    },
                }
            }
        };
        // Within the 8192-byte limit: this kind is about props, not size.
        if case.frame.len() > 8192 { self.huge_props() } else { case }
    }

    fn oversize(&mut self) -> Case {
        let sid = self.sid("os");
        let len = self.rng.usize(8193 - 64..16_000);
        let body: Vec<u8> = (0..len).map(|_| self.rng.u8(..)).collect();
        let frame = encode(1, "shell", &sid, &[Prop::str("user_id", "u1")], &body);
        assert!(frame.len() > 8192);
        Case { frame, expect: Expect::undecodable() }
    }
}

/// Sends `case.frame`, then a barrier ping; returns everything the agent sent before the pong.
async fn exchange(conn: &mut Conn, frame: Vec<u8>) -> Vec<Msg> {
    conn.send(frame).await;
    conn.send(encode(CONTROL, "ping", BARRIER, &[], b"")).await;
    let deadline = Instant::now() + SOON;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = conn.recv_within(left).await.expect("the websocket closed or the agent stopped answering");
        if m.proto == CONTROL && m.typ == "pong" && m.sid == BARRIER {
            return got;
        }
        // Idle control sessions get the agent's own pings after 48 s; not an answer.
        if m.proto == CONTROL && m.typ == "ping" {
            continue;
        }
        got.push(m);
    }
}

/// A kind of malformed input: its name and its case generator.
type Kind = (&'static str, fn(&mut Gen) -> Case);

/// Runs `PER_KIND` cases of each kind; returns (kind, answer label) → count.
async fn run_kinds(
    conn: &mut Conn,
    kinds: &[Kind],
    seed: u64,
) -> BTreeMap<(&'static str, &'static str), usize> {
    let mut g = Gen { rng: fastrand::Rng::with_seed(seed), n: 0 };
    let mut tally = BTreeMap::new();
    for (kind, make) in kinds {
        for i in 0..PER_KIND {
            let case = make(&mut g);
            let what = format!(
                "{kind} #{i} ({} bytes: {:02x?})",
                case.frame.len(),
                &case.frame[..case.frame.len().min(48)]
            );
            let got = exchange(conn, case.frame).await;
            case.expect.check(&got, &what);
            *tally.entry((*kind, case.expect.label())).or_insert(0) += 1;
        }
    }
    tally
}

/// A fresh shell on the same websocket runs a command.
async fn shell_still_works(conn: &mut Conn) {
    conn.new_shell("after", "u-after", None).await;
    let m = conn.recv_until("new reply", |m| m.typ == "new" && m.sid == "after").await;
    assert_eq!((m.proto, m.status), (1, Some(1)), "new failed: {}", m.body_str());
    conn.shell_input("after", "u-after", b"echo still-''alive\n").await;
    conn.output_until("after", "still-alive").await;
}

fn report(tally: &BTreeMap<(&str, &str), usize>) {
    for ((kind, answer), n) in tally {
        eprintln!("malformed_input: {kind:<18} {n:>4} × {answer}");
    }
}

#[test]
fn malformed_frames_are_answered_like_the_reference_and_the_link_stays() {
    smol::block_on(async {
        let started = Instant::now();
        let fx = Fixture::start("malformed", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        let kinds: [Kind; 6] = [
            ("truncated", Gen::truncated),
            ("wrong types", Gen::wrong_type),
            ("int widths", Gen::int_width),
            ("unknown proto/typ", Gen::unknown_proto_typ),
            ("unknown session", Gen::unknown_session),
            ("huge props", Gen::huge_props),
        ];
        let tally = run_kinds(&mut conn, &kinds, 0x6d65_6e64_6572).await;
        report(&tally);
        for (kind, _) in &kinds {
            let n: usize = tally.iter().filter(|((k, _), _)| k == kind).map(|(_, n)| n).sum();
            assert!(n >= 100, "{kind}: only {n} frames");
        }
        shell_still_works(&mut conn).await;
        let log = fx.agent.log();
        assert!(!log.contains("websocket ended"), "the agent dropped the link:\n{log}");
        assert_eq!(fx.agent.children().len(), 1, "exactly the final shell runs");
        eprintln!("malformed_input: done in {:?}", started.elapsed());
    });
}

/// Messages over 8192 bytes: the reference's read limit ends its websocket; this agent refuses
/// the message with a control error and keeps the link.
#[test]
fn oversize_frames_are_refused_and_the_link_stays() {
    smol::block_on(async {
        let fx = Fixture::start("oversize", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        let kinds: [Kind; 1] = [("oversize", Gen::oversize)];
        let tally = run_kinds(&mut conn, &kinds, 0x6f76_6572).await;
        report(&tally);
        shell_still_works(&mut conn).await;
        assert!(!fx.agent.log().contains("websocket ended"), "the agent dropped the link");
    });
}
