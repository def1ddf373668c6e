use super::*;
use proptest::prelude::*;

proptest! {
    #[test]
    fn error_round_trip(err in ".{0,100}", close in any::<bool>(), code in any::<i64>(), p in any::<u16>(),
                        t in ".{0,10}", id in ".{0,10}") {
        let e = ControlError { err: &err, close, code, msgproto: Proto(p), msgtype: &t, msgid: &id };
        let mut buf = [0u8; 512];
        let n = e.encode(&mut buf).unwrap();
        prop_assert_eq!(ControlError::decode(&buf[..n]).unwrap(), e);
    }

    #[test]
    fn open_round_trip(vs in proptest::collection::vec(any::<i64>(), 0..MAX_LIST)) {
        let o = Open::new(&vs).unwrap();
        let mut buf = [0u8; 256];
        let n = o.encode(&mut buf).unwrap();
        prop_assert_eq!(Open::decode(&buf[..n]).unwrap(), o);
    }

    #[test]
    fn accept_round_trip(v in any::<i64>(), ps in proptest::collection::vec(any::<u16>(), 0..MAX_LIST)) {
        let a = Accept::new(v, &ps).unwrap();
        let mut buf = [0u8; 256];
        let n = a.encode(&mut buf).unwrap();
        prop_assert_eq!(Accept::decode(&buf[..n]).unwrap(), a);
    }

    #[test]
    fn bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Open::decode(&bytes);
        let _ = Accept::decode(&bytes);
        let _ = ControlError::decode(&bytes);
    }
}
