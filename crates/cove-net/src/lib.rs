//! Cove's data plane, the part free of I/O: what the kernel must hold for a
//! VPC ([`plan`]) and the stable names every kernel object gets
//! ([`naming`]). What the configuration allows a packet to do is
//! `cove-reach`'s business; the enforcement tests hold the two together. The reconciler that
//! makes a plan real (namespaces, veths, nftables, routes) builds on these;
//! see docs/dataplane.md.

pub mod dns;
#[doc(hidden)]
pub use cove_model::fixtures;
pub mod flowlog;
pub mod linux;
pub mod listen;
pub mod naming;
pub mod netns;
pub mod nft;
pub mod plan;
pub mod reconcile;
