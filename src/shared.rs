//! What every request of one layer shares, and the session manager too: the settings
//! and the store, built once by the layer's builder.

use crate::{config::Config, store::Store};

/// One layer's settings and store, behind an `Arc` in every clone of the layer, its
/// services and its [`SessionManager`](crate::SessionManager).
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) store: Store,
}
