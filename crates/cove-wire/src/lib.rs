//! Cove's wire layer: everything between an HTTP request and a service
//! handler. It verifies SigV4, picks the service from the credential scope,
//! decodes the protocol (EC2 query, query, awsJson 1.1) into a JSON value
//! shaped by the botocore model, validates it, and renders the handler's
//! answer or error in the protocol's own envelope. It never touches state.

pub mod dispatch;
pub mod in_process;
pub mod json;
pub mod model;
pub mod query;
pub mod rest;
pub mod rest_json;
pub mod rest_xml;
pub mod sigv4;
pub mod validate;
pub mod xml;

pub use dispatch::{
    Arrival, Dispatcher, HttpRequest, HttpResponse, Principal, Protocol, RequestContext, Service,
};
