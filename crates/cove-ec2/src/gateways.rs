//! Gateways (stub being written).
#![allow(unused_imports)]

use crate::common::*;
use cove_model::vpc::*;
use cove_model::{AwsError, AwsResult};
use cove_store::Tx;
use serde_json::Value;

pub fn new_internet_gateway(_tx: &mut Tx, _region: &str, _vpc: Option<String>) -> String {
    String::new()
}
pub fn advance_nat_gateways(_tx: &mut Tx) {}
pub fn create_internet_gateway(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn delete_internet_gateway(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn describe_internet_gateways(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn attach_internet_gateway(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn detach_internet_gateway(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn allocate_address(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn release_address(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn describe_addresses(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn create_nat_gateway(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn delete_nat_gateway(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn describe_nat_gateways(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
