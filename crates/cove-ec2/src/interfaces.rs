//! Network interfaces (stub being written).
#![allow(unused_imports)]

use crate::common::*;
use cove_model::vpc::*;
use cove_model::{AwsError, AwsResult};
use cove_store::Tx;
use serde_json::Value;

pub fn create_network_interface(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn delete_network_interface(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn describe_network_interfaces(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
