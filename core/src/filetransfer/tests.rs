use super::*;
use proptest::prelude::*;

proptest! {
    #[test]
    fn file_info_round_trip(path in proptest::option::of(".{0,60}"), size in any::<Option<i64>>(), uid in any::<Option<u32>>(),
                            gid in any::<Option<u32>>(), mode in any::<Option<u32>>(),
                            ts in proptest::option::of((any::<i64>(), 0u32..1_000_000_000))) {
        let fi = FileInfo { path: path.as_deref(), size, uid, gid, mode, modtime: ts.map(|(secs, nanos)| Timestamp { secs, nanos }) };
        let mut buf = [0u8; 256];
        let n = fi.encode(&mut buf).unwrap();
        prop_assert_eq!(FileInfo::decode(&buf[..n]).unwrap(), fi);
    }

    #[test]
    fn upload_round_trip(src in proptest::option::of("[a-z./]{0,30}"), path in proptest::option::of("[a-z./]{0,30}"),
                         uid in any::<Option<u32>>(), mode in any::<Option<u32>>()) {
        let u = UploadRequest { src_path: src.as_deref(), path: path.as_deref(), uid, mode, ..Default::default() };
        let mut buf = [0u8; 256];
        let n = u.encode(&mut buf).unwrap();
        prop_assert_eq!(UploadRequest::decode(&buf[..n]).unwrap(), u);
    }

    #[test]
    fn bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = FileInfo::decode(&bytes);
        let _ = UploadRequest::decode(&bytes);
        let _ = FtError::decode(&bytes);
        let _ = StatFile::decode(&bytes);
    }
}
