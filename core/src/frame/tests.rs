use super::selftests::SHELL_NEW_REPLY;
use super::*;
use crate::msgpack::IntWidth;
use crate::test_util::hex;
use proptest::prelude::*;
use std::vec::Vec;

#[derive(Debug, Clone)]
enum PV {
    I(i64),
    G(i64),
    U16(u16),
    S(std::string::String),
}

fn prop_strategy() -> impl Strategy<Value = (std::string::String, PV)> {
    (
        "[a-z_]{1,12}",
        prop_oneof![
            any::<i64>().prop_map(PV::I),
            any::<i64>().prop_map(PV::G),
            any::<u16>().prop_map(PV::U16),
            ".{0,40}".prop_map(PV::S)
        ],
    )
}

proptest! {
    #[test]
    fn round_trip(proto in any::<u16>(), typ in ".{0,20}", sid in "[0-9a-f-]{0,36}",
                  props in proptest::collection::vec(prop_strategy(), 0..6),
                  body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let ps: Vec<Prop<'_>> = props.iter().map(|(k, v)| Prop { key: k, value: match v {
            PV::I(i) => PropValue::Int64(*i), PV::G(g) => PropValue::GoInt(*g), PV::U16(u) => PropValue::Uint16(*u), PV::S(s) => PropValue::Str(s) } }).collect();
        let out = FrameOut { proto: Proto(proto), typ: &typ, sid: &sid, props: &ps, body: &body, ..FrameOut::EMPTY };
        let mut buf = std::vec![0u8; 4096];
        let n = out.encode(&mut buf).unwrap();
        let f = Frame::decode(&buf[..n]).unwrap();
        prop_assert_eq!(f.header.proto, Proto(proto));
        prop_assert_eq!(f.header.typ, typ.as_str());
        prop_assert_eq!(f.header.sid, sid.as_str());
        prop_assert_eq!(f.body, &body[..]);
        prop_assert_eq!(f.header.props.len(), ps.len());
        for ((k, v), (dk, dv)) in props.iter().zip(f.header.props.iter()) {
            prop_assert_eq!(dk.as_str(), Some(k.as_str()));
            match v {
                PV::I(i) => { prop_assert_eq!(dv.as_int().and_then(|x| x.as_go_int64()), Some(*i)); }
                PV::G(g) => {
                    let x = dv.as_int().unwrap();
                    prop_assert_eq!(x.as_i64(), Some(*g));
                    // Compact: a d3 only when nothing smaller holds the value.
                    prop_assert_eq!(x.width() == IntWidth::I64, *g < i64::from(i32::MIN));
                    prop_assert_eq!(x.width() == IntWidth::PosFixint, (0..128).contains(g));
                }
                PV::U16(u) => {
                    let x = dv.as_int().unwrap();
                    prop_assert_eq!(x.width(), IntWidth::U16);
                    prop_assert_eq!(x.as_u64(), Some(u64::from(*u)));
                }
                PV::S(s) => { prop_assert_eq!(dv.as_str(), Some(s.as_str())); }
            }
        }
        // Relay re-encoding reproduces the bytes exactly.
        let mut again = std::vec![0u8; 4096];
        let m = f.encode(&mut again).unwrap();
        prop_assert_eq!(&again[..m], &buf[..n]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Frame::decode(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(idx in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut bytes = hex(SHELL_NEW_REPLY);
        let i = idx.index(bytes.len());
        bytes[i] = byte;
        let c = cut.index(bytes.len() + 1);
        if let Ok(f) = Frame::decode(&bytes[..c]) {
            // Anything accepted must re-encode and iterate without panicking.
            let mut buf = [0u8; 256];
            let _ = f.encode(&mut buf);
            for _ in f.header.props.iter() {}
        }
    }
}
