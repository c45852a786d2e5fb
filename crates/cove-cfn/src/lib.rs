//! CloudFormation's template engine, without I/O: a template's text (JSON,
//! or YAML with the short-form tags) read into one JSON value with every
//! intrinsic function in its long form ([`parse`]); parameters checked
//! against their declarations ([`parameters`]); conditions and intrinsic
//! functions evaluated against what a stack knows ([`intrinsics`]); the
//! resources' dependency graph, ordered in waves that can be created in
//! parallel ([`graph`]); and what ValidateTemplate and GetTemplateSummary
//! say of a template ([`summary`]). The messages are CloudFormation's.

pub mod graph;
pub mod intrinsics;
pub mod parameters;
pub mod parse;
pub mod summary;
