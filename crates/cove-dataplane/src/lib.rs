//! Cove's data plane, the part that touches the kernel. The reconciler
//! ([`reconcile`]) keeps the kernel equal to the plans `cove-net` computes
//! from the stored world; every kernel effect goes through the small
//! [`Backend`] trait, with a Linux implementation ([`linux`]) and an
//! in-memory one ([`fake`]) that the reconciler's unit tests run against.
//! A second backend (another host's agent, OVN) would implement the same
//! trait. [`run`] is the reconciler's thread in a server and [`vpc_dns`]
//! the VPC resolver's wire side; the service listeners and flow-log
//! delivery stay with the services they serve, in the binary.

pub mod backend;
pub mod fake;
pub mod linux;
pub mod netlink;
pub mod reconcile;
pub mod run;
pub mod vpc_dns;

pub use backend::{Backend, Error};
