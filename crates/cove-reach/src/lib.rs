//! Reachability analysis over the stored VPC model, without I/O: can this
//! source reach that destination on this protocol and port, by which
//! components and rules, and if not, which settings stop it. It reads the
//! same `World` the data plane is compiled from, but not the compiled plan,
//! so comparing its answers with real packets (`cove-reach-diff`) checks
//! the model and the kernel rules against each other.

pub mod question;
pub mod sagemaker;
mod text;
mod traffic;
mod walk;

pub use text::{hop_detail, render_text};
pub use traffic::{Packet, Protocol};
pub use walk::*;

#[cfg(test)]
mod tests;
