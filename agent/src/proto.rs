//! The protocols on the websocket: the [`router`] dispatches every frame by `proto` to its
//! executor ([`shell`], [`filetransfer`], [`portforward`], [`menderclient`]); [`features`] says
//! which are on; [`outframe`] encodes what they send.

pub mod features;
pub mod filetransfer;
pub mod menderclient;
pub mod outframe;
pub mod portforward;
pub mod router;
pub mod shell;
