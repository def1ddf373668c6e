//! File-transfer tests that need no std (see [`crate::selftest`]): run on the host and on the bare-metal runner.

use super::*;
use crate::msgpack::IntWidth;
use crate::selftest::hex;

// Every vector below equals the msgpack.Marshal output of vmihailenco/msgpack v5.3.5 (the version
// mender-connect 2.1.0 vendors; run from Debian's golang-github-vmihailenco-msgpack.v5-dev) on
// structs with go-lib-micro ws/filetransfer's field names, types and tags.

// Go: msgpack.Marshal(wsft.FileInfo{Path: "/etc/hosts", Size: &100, UID: &0, GID: &0,
// Mode: &0644, ModTime: 2021-01-01T00:00:00Z}) as StatFile answers: fields in struct order,
// *int64 -> d3, *uint32 -> ce, time.Time -> fixext4 type -1 (seconds fit 32 bits, no nanos).
const FILE_INFO_V: &str = "86 a470617468 aa2f6574632f686f737473 a473697a65 d30000000000000064 \
    a3756964 ce00000000 a3676964 ce00000000 a46d6f6465 ce000001a4 a76d6f6474696d65 d6ff5fee6600";

// Go: chunkWriter.Write in session/filetransfer.go: props {"offset": c.Offset (int64)}, body bin.
const CHUNK_V: &str = "82 a3686472 84 a570726f746f cd0002 a3747970 aa66696c655f6368756e6b a3736964 a173 \
    a570726f7073 81 a66f6666736574 d30000000000001000 a4626f6479 c402 6162";

// Go: msgpack.Marshal(wsft.UploadRequest{SrcPath: "f.txt", Path: "/tmp/f.txt", UID: &100,
// GID: &100, Mode: &0600}): src_path first, size/modtime omitted.
const PUT_V: &str = "85 a87372635f70617468 a5662e747874 a470617468 aa2f746d702f662e747874 \
    a3756964 ce00000064 a3676964 ce00000064 a46d6f6465 ce00000180";

// Go: FileTransferHandler.Error: wsft.Error{Error: &"x", MessageType: &"stat"}.
const ERR_V: &str = "82 a3657272 a178 a76d736774797065 a473746174";

// Go: the upload's first answer: ProtoMsg{Header{Proto: 2, MsgType: "ack", SessionID: "s",
// Properties: {"offset": int64(0)}}}.
const ACK0_V: &str = "81 a3686472 84 a570726f746f cd0002 a3747970 a361636b a3736964 a173 \
    a570726f7073 81 a66f6666736574 d30000000000000000";

fn file_info_vector() {
    let fi = FileInfo {
        path: Some("/etc/hosts"),
        size: Some(100),
        uid: Some(0),
        gid: Some(0),
        mode: Some(0o644),
        modtime: Some(Timestamp { secs: 1_609_459_200, nanos: 0 }),
    };
    let mut buf = [0u8; 128];
    let n = fi.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &hex(FILE_INFO_V)[..]);
    assert_eq!(FileInfo::decode(&hex(FILE_INFO_V)).unwrap(), fi);
}

fn chunk_vector() {
    let mut buf = [0u8; 128];
    let n = encode_chunk(&mut buf, "s", 4096, b"ab").unwrap();
    assert_eq!(&buf[..n], &hex(CHUNK_V)[..]);
    let bytes = hex(CHUNK_V);
    let f = Frame::decode(&bytes).unwrap();
    match FileTransferMessage::from_frame(&f).unwrap() {
        FileTransferMessage::Chunk { offset, data } => {
            assert_eq!(offset.and_then(Int::as_go_int64), Some(4096));
            assert_eq!(data, b"ab");
        }
        m => panic!("{m:?}"),
    }
}

fn put_file_vector() {
    let u = UploadRequest {
        src_path: Some("f.txt"),
        path: Some("/tmp/f.txt"),
        uid: Some(100),
        gid: Some(100),
        mode: Some(0o600),
        ..Default::default()
    };
    let mut buf = [0u8; 128];
    let n = u.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &hex(PUT_V)[..]);
    assert_eq!(UploadRequest::decode(&hex(PUT_V)).unwrap(), u);
}

fn error_and_ack_vectors() {
    let e = FtError { err: Some("x"), msgtype: Some("stat"), msgid: None, code: 0 };
    let mut buf = [0u8; 128];
    let n = e.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &hex(ERR_V)[..]);
    assert_eq!(FtError::decode(&hex(ERR_V)).unwrap(), e);
    let n = encode_ack(&mut buf, "s", 0).unwrap();
    assert_eq!(&buf[..n], &hex(ACK0_V)[..]);
}

/// The current server reads a file-transfer `error` body as go-lib-micro `ws.Error`
/// (`Code int \`msgpack:"code,omitempty"\``) and answers the user with `code` when > 0
/// (mender-server deviceconnect `management_filetransfer.go`). Without a code the body stays the
/// reference's, byte for byte.
fn coded_error_reply() {
    let chunk =
        hex("82 a3686472 83 a570726f746f 02 a3747970 a8 6765745f66696c65 a3736964 a173 a4626f6479 c0");
    let f = Frame::decode(&chunk).unwrap();
    let mut buf = [0u8; 128];
    let n = encode_coded_error_reply(&mut buf, &f, "access denied: x", 403).unwrap();
    let e = Frame::decode(&buf[..n]).unwrap();
    let body = FtError::decode(e.body).unwrap();
    assert_eq!(
        body,
        FtError { err: Some("access denied: x"), msgtype: Some(GET_FILE), msgid: None, code: 403 }
    );
    // `code` as Go's int encoder writes 403: uint16.
    assert!(e.body.ends_with(&hex("a4636f6465 cd0193")), "{:02x?}", e.body);
    let n = encode_error_reply(&mut buf, &f, "boom").unwrap();
    let plain = Frame::decode(&buf[..n]).unwrap();
    assert_eq!(plain.body, &hex("82 a3657272 a4626f6f6d a76d736774797065 a8676574 5f66696c65")[..]);
    assert_eq!(FtError::decode(plain.body).unwrap().code, 0);
}

fn stat_and_get_bodies() {
    // {"path": "/x"} both ways; StatFile writes nil for a missing path, GetFile omits it.
    let v = hex("81 a470617468 a22f78");
    assert_eq!(StatFile::decode(&v).unwrap().path, Some("/x"));
    assert_eq!(GetFile::decode(&v).unwrap().path, Some("/x"));
    let mut buf = [0u8; 32];
    let n = StatFile { path: Some("/x") }.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &v[..]);
    let n = GetFile { path: Some("/x") }.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &v[..]);
    let n = StatFile { path: None }.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &hex("81 a470617468 c0")[..]);
    let n = GetFile { path: None }.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &hex("80")[..]);
    assert_eq!(StatFile::decode(&hex("81 a470617468 c0")).unwrap().path, None);
    assert_eq!(StatFile::decode(&hex("81 a470617468 01")), Err(DecodeError::UnexpectedType));
    assert_eq!(FileInfo::decode(&hex("81 a3756964 cf0000000100000000")), Err(DecodeError::IntOutOfRange));
}

fn timestamps_all_three_forms() {
    let cases = [
        (Timestamp { secs: 1_609_459_200, nanos: 0 }, "d6ff 5fee6600"),
        // nanos set -> 64-bit form: nsec<<34 | secs
        (Timestamp { secs: 1, nanos: 1 }, "d7ff 0000000400000001"),
        // negative seconds -> 96-bit form: nsec (u32) then secs (i64)
        (Timestamp { secs: -1, nanos: 5 }, "c70cff 00000005 ffffffffffffffff"),
    ];
    for (ts, vec) in cases {
        let mut buf = [0u8; 16];
        let mut w = Writer::new(&mut buf);
        ts.write(&mut w).unwrap();
        let n = w.len();
        assert_eq!(&buf[..n], &hex(vec)[..], "{ts:?}");
        let mut rd = crate::msgpack::Reader::new(&buf[..n]);
        match rd.value(0).unwrap() {
            Value::Ext(t, d) => assert_eq!(Timestamp::from_ext(t, d).unwrap(), ts),
            v => panic!("{v:?}"),
        }
    }
    assert!(Timestamp::from_ext(-1, &[0; 5]).is_err());
    assert!(Timestamp::from_ext(2, &[0; 4]).is_err());
    assert!(Timestamp::from_ext(-1, &hex("ffffffff00000000")).is_err());
}

fn replies_copy_request_header() {
    // A chunk with a compact offset and user_id: ack copies the header verbatim.
    let chunk = hex("81 a3686472 84 a570726f746f cd0002 a3747970 aa66696c655f6368756e6b a3736964 a173 \
        a570726f7073 82 a66f6666736574 cd1000 a7757365725f6964 a175");
    let f = Frame::decode(&chunk).unwrap();
    let mut buf = [0u8; 128];
    let n = encode_ack_of(&mut buf, &f).unwrap();
    let a = Frame::decode(&buf[..n]).unwrap();
    assert_eq!(a.header.typ, ACK);
    assert_eq!(a.header.props, f.header.props);
    assert_eq!(a.header.props.get_int(PROP_OFFSET).map(|i| i.width()), Some(IntWidth::U16));
    let n = encode_error_reply(&mut buf, &f, "boom").unwrap();
    let e = Frame::decode(&buf[..n]).unwrap();
    assert_eq!((e.header.typ, e.header.sid, e.header.props.get_str(PROP_USER_ID)), (ERROR, "s", Some("u")));
    assert_eq!(
        FtError::decode(e.body).unwrap(),
        FtError { err: Some("boom"), msgtype: Some(FILE_CHUNK), msgid: None, code: 0 }
    );
}

fn messages_from_frames() {
    let mut buf = [0u8; 256];
    let fi = FileInfo { path: Some("/a"), size: Some(3), ..Default::default() };
    let n = encode_file_info(&mut buf, "s", &fi).unwrap();
    assert_eq!(
        FileTransferMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()),
        Ok(FileTransferMessage::FileInfo(fi))
    );
    let n = encode_chunk(&mut buf, "s", 10, b"").unwrap();
    let f = Frame::decode(&buf[..n]).unwrap();
    assert!(
        matches!(FileTransferMessage::from_frame(&f), Ok(FileTransferMessage::Chunk { data: [], offset: Some(o) }) if o.as_go_int64() == Some(10))
    );
    let n = FrameOut { proto: Proto::FILE_TRANSFER, typ: "put_file/continue", ..FrameOut::EMPTY }
        .encode(&mut buf)
        .unwrap();
    assert_eq!(
        FileTransferMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()),
        Ok(FileTransferMessage::Unknown("put_file/continue"))
    );
}

fn go_file_modes() {
    use go_file_mode::*;
    assert_eq!(from_posix(0o100644), 0o644);
    assert!(is_regular(from_posix(0o100644)));
    assert_eq!(from_posix(0o040755), DIR | 0o755);
    assert!(!is_regular(from_posix(0o010600)));
    assert_eq!(from_posix(0o104711), SETUID | 0o711);
    assert_eq!(from_posix(0o020620), DEVICE | CHAR_DEVICE | 0o620);
    // The server's "regular" mask.
    for m in [DIR, SYMLINK, DEVICE, NAMED_PIPE, SOCKET, CHAR_DEVICE, IRREGULAR] {
        assert_ne!(m & 0x8F28_0000, 0);
        assert!(!is_regular(m));
    }
}

crate::selftests!(
    file_info_vector,
    chunk_vector,
    put_file_vector,
    error_and_ack_vectors,
    coded_error_reply,
    stat_and_get_bodies,
    timestamps_all_three_forms,
    replies_copy_request_header,
    messages_from_frames,
    go_file_modes,
);
