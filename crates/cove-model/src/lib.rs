//! Cove's pure model: AWS-style errors, resource ids and ARNs, CIDR arithmetic,
//! describe-filter matching, and the VPC resource types kept in the store.
//! Nothing here does I/O, so every rule in it is unit-tested directly.

pub mod cfn;
pub mod cidr;
pub mod convert;
pub mod efs;
pub mod endpoints;
pub mod error;
pub mod filter;
pub mod fixtures;
pub mod hosts;
pub mod iam;
pub mod ids;
pub mod instance;
pub mod jobs;
pub mod paging;
pub mod policy;
pub mod protocol;
pub mod route53;
pub mod s3_uri;
pub mod studio;
pub mod text_enum;
pub mod vpc;
pub mod world;

pub use error::{AwsError, AwsResult};
pub mod region;
pub mod services;
