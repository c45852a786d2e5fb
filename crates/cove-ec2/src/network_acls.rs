//! Network ACLs (stub being written).
#![allow(unused_imports)]

use crate::common::*;
use cove_model::vpc::*;
use cove_model::{AwsError, AwsResult};
use cove_store::Tx;
use serde_json::Value;

pub fn new_default_acl(_tx: &mut Tx, _vpc: &Vpc) {}
pub fn associate_with_default(_tx: &mut Tx, _subnet: &Subnet) {}
pub fn drop_subnet(_tx: &mut Tx, _subnet_id: &str) {}
pub fn create_network_acl(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn delete_network_acl(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn describe_network_acls(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn create_entry(_r: &Req, _replace: bool) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn delete_entry(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn replace_association(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
