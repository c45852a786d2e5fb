//! The SageMaker API's requests as types, from `cove-shapes` (generated
//! there from the botocore model the wire layer validates against).
//! [`Request::parse`] runs once per call, at the boundary; handlers take
//! the typed request and never read JSON by name.

pub use cove_shapes::sagemaker::*;
pub use cove_shapes::Timestamp;
