//! CloudFormation's template engine, without I/O: a template's text (JSON,
//! or YAML with the short-form tags) read into one JSON value with every
//! intrinsic function in its long form ([`parse`]); parameters checked
//! against their declarations ([`parameters`]); conditions and intrinsic
//! functions evaluated against what a stack knows ([`intrinsics`]); and the
//! resources' dependency graph, ordered in waves that can be created in
//! parallel ([`graph`]). The messages are CloudFormation's.

pub mod graph;
pub mod intrinsics;
pub mod parameters;
pub mod parse;
