//! The one error type every service handler returns. Each protocol renders it
//! in its own envelope (EC2 XML, query XML, awsJson), so handlers only choose
//! the AWS code and message.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub code: String,
    pub message: String,
    /// HTTP status the protocol should answer with.
    pub status: u16,
    /// `Sender` (client fault) or `Receiver` (server fault), used by the query protocol.
    pub sender: bool,
}

pub type AwsResult<T> = Result<T, AwsError>;

impl AwsError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        AwsError {
            code: code.into(),
            message: message.into(),
            status,
            sender: status < 500,
        }
    }
    /// A 400 with the given code: the common case for EC2 client errors.
    pub fn client(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }
    pub fn invalid_parameter_value(message: impl Into<String>) -> Self {
        Self::client("InvalidParameterValue", message)
    }
    pub fn invalid_parameter_combination(message: impl Into<String>) -> Self {
        Self::client("InvalidParameterCombination", message)
    }
    pub fn missing_parameter(name: &str) -> Self {
        Self::client(
            "MissingParameter",
            format!("The request must contain the parameter {name}"),
        )
    }
    /// `<Kind>.NotFound` with EC2's wording, e.g. `InvalidVpcID.NotFound`.
    pub fn not_found(code: &str, what: &str, id: &str) -> Self {
        Self::client(code, format!("The {what} ID '{id}' does not exist"))
    }
    pub fn dependency_violation(message: impl Into<String>) -> Self {
        Self::client("DependencyViolation", message)
    }
    pub fn dry_run_ok() -> Self {
        Self::new(
            412,
            "DryRunOperation",
            "Request would have succeeded, but DryRun flag is set.",
        )
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AwsError {}
