//! Cove's web console, served by `cove serve` under `/_cove/console/`: a
//! signed-in person sees their account's VPCs drawn as resource maps,
//! their security groups, network ACLs and route tables, asks "can A reach
//! B?" and sees the answer on the map, and follows SageMaker jobs,
//! endpoints and Studio apps with their logs and flow logs. Pages are
//! rendered on the server from the store's snapshot of the account (the
//! same state the APIs answer from); they update themselves when the
//! store changes, through a server-sent event stream. With IAM enforced,
//! each page is shown only to a signed-in principal whose identity
//! policies allow the read calls it stands for.

pub mod html;
pub mod map;
mod pages;
mod session;

pub use pages::{router, vpc_page_body};
pub use session::Sessions;

use cove_logs::LogsService;
use cove_store::Store;
use cove_wire::dispatch::{Authorizer, CredentialLookup};
use std::sync::Arc;

/// What the console reads, and whom it lets in.
pub struct Console {
    pub store: Arc<Store>,
    pub logs: Arc<LogsService>,
    /// The same lookup the APIs' signature check uses: a person signs in
    /// with an access key id and its secret, as the CLI is configured.
    pub credentials: CredentialLookup,
    pub sessions: Sessions,
    /// With IAM enforced, the identity-policy check the APIs make: a page
    /// shows only what its viewer could read with the API calls behind it.
    pub authorizer: Option<Authorizer>,
    /// The region a page's permission checks are made in.
    pub region: String,
}
