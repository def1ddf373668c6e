//! The protocols on the websocket: the [`router`] dispatches every frame by `proto` to its
//! executor (`shell`, [`filetransfer`], `portforward`, `menderclient`); `features` says
//! which are on; `outframe` encodes what they send.

pub(crate) mod by_sid;
pub(crate) mod features;
pub mod filetransfer;
#[doc(hidden)]
pub mod harness;
pub(crate) mod menderclient;
pub(crate) mod outframe;
pub(crate) mod portforward;
pub mod router;
pub(crate) mod shell;
