//! Security groups (stub being written).
#![allow(unused_imports)]

use crate::common::*;
use cove_model::vpc::*;
use cove_model::{AwsError, AwsResult};
use cove_store::Tx;
use serde_json::Value;

pub fn new_default_group(_tx: &mut Tx, _vpc: &Vpc, _account: &str) {}
pub fn create_security_group(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn delete_security_group(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn describe_security_groups(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn authorize(_r: &Req, _egress: bool) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn revoke(_r: &Req, _egress: bool) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn describe_security_group_rules(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
