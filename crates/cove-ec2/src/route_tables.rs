//! Route tables (stub being written).
#![allow(unused_imports)]

use crate::common::*;
use cove_model::vpc::*;
use cove_model::{AwsError, AwsResult};
use cove_store::Tx;
use serde_json::Value;

pub fn new_main_table(_tx: &mut Tx, _vpc: &Vpc) {}
pub fn drop_subnet(_tx: &mut Tx, _subnet_id: &str) {}
pub fn create_route_table(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn delete_route_table(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn describe_route_tables(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn create_route(_r: &Req, _replace: bool) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn delete_route(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn associate(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn disassociate(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
pub fn replace_association(_r: &Req) -> AwsResult<Value> {
    Err(AwsError::internal("not implemented yet"))
}
