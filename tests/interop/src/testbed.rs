//! A whole device setup against the mock server: private bus, mock server, the real Mender client
//! (authenticated and accepted), and optionally an agent connected to the server. Fields are
//! declared in the order they must stop: agent, client, bus, mock.

use std::path::PathBuf;

use crate::agent::{Agent, AgentKind};
use crate::auth_bus::{AuthBusClient, JwtAndUrl};
use crate::bus::PrivateBus;
use crate::device_files::Identity;
use crate::mender_client::{MenderClient, MenderClientOptions};
use crate::mock::{ManagementApi, MockOptions, MockServer};
use crate::{Error, TestEnv, wait};

/// How the device gets admitted by the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Admission {
    /// The device appears as pending; the test accepts its auth set via the management API.
    ManualAccept,
    /// The mock runs with `--auto-accept`.
    AutoAccept,
    /// The identity and this key were preauthorized before the client started; the client is
    /// given the private key.
    Preauthorized {
        /// The device private key to install.
        private_key: PathBuf,
    },
}

/// A device whose Mender client is authenticated, with an optional agent.
pub struct Testbed {
    /// The agent, once started.
    pub agent: Option<Agent>,
    /// The real Mender client.
    pub client: MenderClient,
    /// A D-Bus connection of the test's own, to observe the client.
    pub bus_client: AuthBusClient,
    /// The private bus.
    pub bus: PrivateBus,
    /// The mock server.
    pub mock: MockServer,
    /// A logged-in management API session.
    pub api: ManagementApi,
    /// The device identity.
    pub identity: Identity,
    /// The device id the server assigned.
    pub device_id: String,
    /// What GetJwtToken returned once authenticated.
    pub jwt: JwtAndUrl,
}

impl Testbed {
    /// Starts the mock server (auto-accepting for [`Admission::AutoAccept`]).
    pub fn start_mock(env: &TestEnv, admission: &Admission) -> Result<MockServer, Error> {
        Self::start_mock_with(env, admission, MockOptions::default())
    }

    /// Starts the mock server with `options` (auto-accept set from `admission`).
    pub fn start_mock_with(
        env: &TestEnv,
        admission: &Admission,
        options: MockOptions,
    ) -> Result<MockServer, Error> {
        MockServer::start(
            env,
            &MockOptions { auto_accept: matches!(admission, Admission::AutoAccept), ..options },
        )
    }

    /// Starts bus and client against an already running `mock`, gets the device admitted and waits
    /// until the client hands out its token over D-Bus.
    pub fn start_device(
        env: &TestEnv,
        mock: MockServer,
        identity: Identity,
        admission: &Admission,
    ) -> Result<Self, Error> {
        let api = mock.login()?;
        let bus = PrivateBus::start(env)?;
        let bus_client = AuthBusClient::connect(&bus)?;
        bus_client.watch_token_changes()?;
        let device_key = match admission {
            Admission::Preauthorized { private_key } => Some(private_key.clone()),
            _ => None,
        };
        let mut client = MenderClient::start(
            env,
            &bus,
            &MenderClientOptions {
                server_url: mock.url().to_owned(),
                identity: identity.clone(),
                device_key,
            },
        )?;
        client.wait_for_bus_name(&bus_client)?;
        if let Admission::ManualAccept = admission {
            let pending = api.wait_for_device("mac", identity.mac(), "pending")?;
            api.accept_pending(&pending)?;
        }
        let jwt = client.wait_for_token(&bus_client)?;
        let device = api.wait_for_device("mac", identity.mac(), "accepted")?;
        Ok(Testbed { agent: None, client, bus_client, bus, mock, api, identity, device_id: device.id, jwt })
    }

    /// Starts the agent and waits until the server reports the device connected.
    pub fn start_agent(&mut self, env: &TestEnv, kind: AgentKind) -> Result<(), Error> {
        self.start_agent_with_config(env, kind, &serde_json::Value::Null)
    }

    /// Stops the running agent (if any), then starts `kind` with the configuration overrides of
    /// [`Agent::start_with_config`] and waits until the server reports the device connected
    /// again, as the integration suite's `set_limits` does (edit the config, kill the agent,
    /// wait for the reconnect).
    pub fn start_agent_with_config(
        &mut self,
        env: &TestEnv,
        kind: AgentKind,
        overrides: &serde_json::Value,
    ) -> Result<(), Error> {
        self.start_agent_with_config_env(env, kind, overrides, &[])
    }

    /// [`Testbed::start_agent_with_config`] with extra environment variables for the agent.
    pub fn start_agent_with_config_env(
        &mut self,
        env: &TestEnv,
        kind: AgentKind,
        overrides: &serde_json::Value,
        extra_env: &[(String, String)],
    ) -> Result<(), Error> {
        if self.agent.take().is_some() {
            // Dropping the agent stopped it; the server notices the closed socket.
            wait::until(
                &format!("device {} to be reported disconnected", self.device_id),
                wait::PEER_TIMEOUT,
                std::time::Duration::from_millis(200),
                || {
                    Ok((self.api.connect_status(&self.device_id)?.as_deref() != Some("connected"))
                        .then_some(()))
                },
            )?;
        }
        let agent = Agent::start_with_config_env(env, &self.bus, kind, overrides, extra_env)?;
        self.agent = Some(agent);
        self.api.wait_connected(&self.device_id)?;
        if let Some(agent) = self.agent.as_mut() {
            agent.ensure_running()?;
        }
        Ok(())
    }
}
