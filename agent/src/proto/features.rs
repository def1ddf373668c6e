//! The optional protocols (file transfer, port forward, mender-client) and their registration
//! with the router, from the configuration (`FileTransfer.Disable`, `PortForward.Disable`,
//! `MenderClient.Disable`, `Limits`).

use std::sync::Arc;

use mender_connect_core::Proto;

use crate::config::Config;
use crate::proto::router::{Router, SessionHandler};

/// What the optional protocols may do; `None` = disabled.
#[derive(Clone, Debug)]
pub struct Features {
    /// File transfer (2).
    pub file_transfer: Option<Arc<crate::proto::filetransfer::Settings>>,
    /// Port forward (3).
    pub port_forward: Option<crate::proto::portforward::Settings>,
    /// Mender-client triggers (4).
    pub mender_client: Option<Arc<crate::proto::menderclient::Settings>>,
}

impl Features {
    /// From the loaded configuration.
    pub fn from_config(config: &Config) -> Self {
        let file_transfer = (!config.file_transfer.disable).then(|| {
            let mut s = crate::proto::filetransfer::Settings::new(
                config.limits.enabled,
                config.limits.file_transfer.clone(),
            );
            s.window_chunks = config.file_transfer_ack_window;
            Arc::new(s)
        });
        let port_forward = (!config.port_forward.disable).then_some(crate::proto::portforward::Settings {
            connect_timeout: config.port_forward_timeouts.connect,
            idle_timeout: config.port_forward_timeouts.idle,
            max_connections_per_session: config.port_forward_limits.per_session,
            max_connections: config.port_forward_limits.total,
        });
        let mender_client = (!config.mender_client.disable)
            .then(|| Arc::new(crate::proto::menderclient::Settings::default()));
        Self { file_transfer, port_forward, mender_client }
    }

    /// Everything off.
    #[cfg(test)]
    pub fn disabled() -> Self {
        Self { file_transfer: None, port_forward: None, mender_client: None }
    }
}

/// Registers the enabled protocols; their handlers send bulk frames through `out`, the
/// port-forward connections and file transfer's download tasks report on `reports` (for
/// [`Router::report`]).
pub fn register(
    router: &mut Router,
    features: &Features,
    out: &async_channel::Sender<Vec<u8>>,
    reports: &async_channel::Sender<crate::proto::router::Report>,
) {
    if let Some(s) = &features.file_transfer {
        router.enable_file_transfer(s, out.clone(), reports.clone());
    }
    if let Some(s) = &features.port_forward {
        router.enable_port_forward(s, out.clone(), reports.clone());
    }
    if let Some(s) = &features.mender_client {
        let (s, out) = (Arc::clone(s), out.clone());
        // One set of running commands for all sessions: a duplicate joins the running one.
        let in_flight = crate::proto::menderclient::InFlight::default();
        router.register(
            Proto::MENDER_CLIENT,
            Box::new(move || {
                Box::new(crate::proto::menderclient::MenderClient::sharing(
                    Arc::clone(&s),
                    out.clone(),
                    in_flight.clone(),
                )) as Box<dyn SessionHandler>
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocols(json: &str) -> Vec<u16> {
        let loaded = Config::from_json_str(json).unwrap();
        let features = Features::from_config(&loaded.config);
        let mut router = Router::new(false);
        let (tx, _rx) = async_channel::bounded(1);
        let (reports, _reports_rx) = async_channel::unbounded();
        register(&mut router, &features, &tx, &reports);
        router.protocols()
    }

    #[test]
    fn disable_keys_control_what_is_offered() {
        let base = r#""ShellCommand":"/bin/sh","User":"root""#;
        assert_eq!(protocols(&format!("{{{base}}}")), vec![2, 3, 4]);
        assert_eq!(protocols(&format!(r#"{{{base},"FileTransfer":{{"Disable":true}}}}"#)), vec![3, 4]);
        assert_eq!(protocols(&format!(r#"{{{base},"PortForward":{{"Disable":true}}}}"#)), vec![2, 4]);
        assert_eq!(protocols(&format!(r#"{{{base},"MenderClient":{{"Disable":true}}}}"#)), vec![2, 3]);
        let all_off = format!(
            r#"{{{base},"FileTransfer":{{"Disable":true}},"PortForward":{{"Disable":true}},"MenderClient":{{"Disable":true}}}}"#
        );
        assert!(protocols(&all_off).is_empty());
        let f = Features::disabled();
        assert!(f.file_transfer.is_none() && f.port_forward.is_none() && f.mender_client.is_none());
    }

    #[test]
    fn limits_reach_file_transfer() {
        let json = r#"{"ShellCommand":"/bin/sh","User":"root","Limits":{"Enabled":true,"FileTransfer":{"Chroot":"/data","MaxFileSize":10}}}"#;
        let loaded = Config::from_json_str(json).unwrap();
        let ft = Features::from_config(&loaded.config).file_transfer.unwrap();
        assert!(ft.enforce && ft.jail.enforce);
        assert_eq!(ft.jail.chroot.as_deref(), Some(std::path::Path::new("/data")));
        assert_eq!(ft.limits.max_file_size, Some(10));
    }

    #[test]
    fn window_and_timeouts_reach_the_handlers() {
        let json = r#"{"ShellCommand":"/bin/sh","User":"root","FileTransfer":{"AckWindowChunks":64},
                       "PortForward":{"ConnectTimeoutSeconds":5,"IdleTimeoutSeconds":90,
                                      "MaxConnectionsPerSession":3,"MaxConnections":7}}"#;
        let loaded = Config::from_json_str(json).unwrap();
        let f = Features::from_config(&loaded.config);
        assert_eq!(f.file_transfer.unwrap().window_chunks, 64);
        let pf = f.port_forward.unwrap();
        assert_eq!(pf.connect_timeout, std::time::Duration::from_secs(5));
        assert_eq!(pf.idle_timeout, std::time::Duration::from_secs(90));
        assert_eq!((pf.max_connections_per_session, pf.max_connections), (3, 7));
    }
}
