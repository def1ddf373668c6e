use super::*;
use proptest::prelude::*;

proptest! {
    #[test]
    fn new_round_trip(h in proptest::option::of("[a-z0-9.]{0,40}"), p in any::<Option<u16>>(), pr in proptest::option::of("tcp|udp|x")) {
        let n = PortForwardNew { remote_host: h.as_deref(), remote_port: p, protocol: pr.as_deref() };
        let mut buf = [0u8; 128];
        let len = n.encode(&mut buf).unwrap();
        prop_assert_eq!(PortForwardNew::decode(&buf[..len]).unwrap(), n);
    }
}
