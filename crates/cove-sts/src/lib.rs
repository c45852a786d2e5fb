//! STS: who the caller is. `GetCallerIdentity` answers from the principal the
//! wire layer authenticated; temporary credentials (AssumeRole) come with jobs.

use cove_model::{AwsError, AwsResult};
use cove_wire::{model::ServiceModel, Protocol, RequestContext, Service};
use serde_json::{json, Value};

pub struct StsService;

impl Service for StsService {
    fn signing_name(&self) -> &'static str {
        "sts"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Query
    }
    fn model(&self) -> &'static ServiceModel {
        cove_wire::model::sts()
    }
    fn handle(&self, ctx: &RequestContext, _input: Value) -> AwsResult<Value> {
        match ctx.operation.as_str() {
            "GetCallerIdentity" => Ok(json!({
                "UserId": ctx.principal.user_id,
                "Account": ctx.principal.account_id,
                "Arn": ctx.principal.arn,
            })),
            other => Err(AwsError::client(
                "InvalidAction",
                format!("Could not find operation {other} for version 2011-06-15"),
            )),
        }
    }
}
