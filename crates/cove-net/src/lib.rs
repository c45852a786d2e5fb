//! Cove's data plane, the part free of I/O: what the kernel must hold for a
//! VPC ([`plan`]) and the stable names every kernel object gets
//! ([`naming`]). What the configuration allows a packet to do is
//! `cove-reach`'s business; the enforcement tests hold the two together.
//! The nftables rendering ([`nft`]) is typed data ([`ruleset`]) with a diff
//! into operations. `cove-dataplane` makes plans real in the kernel; see
//! docs/dataplane.md.

pub mod acl_compile;
pub mod dns;
#[doc(hidden)]
pub use cove_model::fixtures;
pub mod flowlog;
pub mod listen;
pub mod naming;
pub mod netns;
pub mod nft;
pub mod overlay;
pub mod plan;
pub mod ruleset;
