//! SageMaker endpoints as stored documents: the status AWS shows, the
//! variants in service (and those an `UpdateEndpoint` is bringing up), and
//! every instance with its ENI, its progress and the namespace its serving
//! container listens in. The hosting supervisor drives the instances; the
//! runtime front reads the in-service ones to route `InvokeEndpoint`.
//!
//! A record keeps its request as the typed struct from `cove-shapes`,
//! boxed: the store's maps hold records inline in their tree nodes, and
//! requests of up to a few KB inline overflowed a driver thread's stack in
//! a debug build. The box changes nothing in the stored JSON.

use cove_shapes::sagemaker::{CreateEndpointInput, CreateModelInput, CreateTransformJobRequest};
use serde::{Deserialize, Serialize};

crate::text_enum! {
    /// `EndpointStatus`.
    pub enum EndpointStatus {
        OutOfService = "OutOfService",
        Creating = "Creating",
        Updating = "Updating",
        SystemUpdating = "SystemUpdating",
        RollingBack = "RollingBack",
        InService = "InService",
        Deleting = "Deleting",
        Failed = "Failed",
        UpdateRollbackFailed = "UpdateRollbackFailed",
    }
}

/// One production variant as the endpoint runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointVariant {
    pub name: String,
    pub model_name: String,
    pub instance_type: String,
    pub current_weight: f64,
    pub desired_weight: f64,
    pub current_instance_count: u32,
    pub desired_instance_count: u32,
    /// The model's image, for `DeployedImages`.
    pub image: String,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Waiting for its ENI (and the data plane to plumb it).
    Provisioning,
    /// Fetching the model data through its ENI.
    Downloading,
    /// The serving container runs; `/ping` has not answered yet.
    Starting,
    /// `/ping` answered: it takes traffic.
    InService,
    /// It could not start or its container died; it takes no traffic.
    Failed,
    /// Replaced or scaled in: drained, then stopped and released.
    Retiring,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointInstance {
    /// `i-` and 17 hex digits, as in the instance's log stream name.
    pub id: String,
    pub variant: String,
    /// The endpoint configuration it was started for.
    pub config_name: String,
    pub eni_id: Option<String>,
    pub state: InstanceState,
    /// The network namespace (a path) in which the serving container
    /// listens on 127.0.0.1:8080, once it is InService.
    pub netns_path: Option<String>,
    pub failure_reason: Option<String>,
    /// The model's execution role session it fetches its model data with.
    #[serde(default)]
    pub session_access_key: Option<String>,
    /// When it started retiring (RFC 3339), for the drain period.
    #[serde(default)]
    pub retiring_since: Option<String>,
    /// The agent's host it runs on (`None`: the control plane's host).
    /// Set with its ENI, in one write, so it is never placed twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_on: Option<String>,
    /// A batch transform job's instance only: its host has transformed its
    /// share of the input and written the output objects.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transformed: bool,
    /// How its host pulls the model's image from Cove's registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull: Option<crate::jobs::ImagePull>,
}

impl EndpointInstance {
    /// A new instance of `variant` for `config_name`, with a fresh id, about
    /// to be provisioned.
    pub fn provisioning(variant: &str, config_name: &str) -> EndpointInstance {
        EndpointInstance {
            id: format!("i-{}", crate::ids::random_string(b"0123456789abcdef", 17)),
            variant: variant.to_string(),
            config_name: config_name.to_string(),
            eni_id: None,
            state: InstanceState::Provisioning,
            netns_path: None,
            failure_reason: None,
            session_access_key: None,
            retiring_since: None,
            placed_on: None,
            transformed: false,
            image_pull: None,
        }
    }

    /// Counts towards its variant's instance count.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, InstanceState::Failed | InstanceState::Retiring)
    }

    /// Whether a request that reaches it is still answered: in service,
    /// or retired and draining (a front whose view of the store is a few
    /// milliseconds older than its host's may still send it one).
    pub fn answers_requests(&self) -> bool {
        matches!(
            self.state,
            InstanceState::InService | InstanceState::Retiring
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SageMakerEndpoint {
    pub name: String,
    pub arn: String,
    pub region: String,
    pub account_id: String,
    /// The configuration in service (or being created).
    pub config_name: String,
    pub variants: Vec<EndpointVariant>,
    /// `UpdateEndpoint`'s new configuration while it comes up beside the old.
    pub pending_config: Option<String>,
    pub pending_variants: Vec<EndpointVariant>,
    pub pending_since: Option<String>,
    pub status: EndpointStatus,
    pub failure_reason: Option<String>,
    pub creation_time: String,
    pub last_modified_time: String,
    pub instances: Vec<EndpointInstance>,
    pub delete_requested: bool,
    /// The validated Create request (its `DeploymentConfig` as the last
    /// `UpdateEndpoint` gave it, tags).
    pub request: Box<CreateEndpointInput>,
}

impl SageMakerEndpoint {
    pub fn key_of(region: &str, account: &str, name: &str) -> String {
        crate::jobs::sagemaker_arn(region, account, &format!("endpoint/{name}"))
    }

    pub fn key(&self) -> String {
        self.arn.clone()
    }

    /// The variant (current or pending) an instance belongs to.
    pub fn variant_of(&self, instance: &EndpointInstance) -> Option<&EndpointVariant> {
        let list = if instance.config_name == self.config_name {
            &self.variants
        } else {
            &self.pending_variants
        };
        list.iter().find(|v| v.name == instance.variant)
    }

    /// The instances that take traffic, by variant of the configuration in service.
    pub fn serving(&self) -> Vec<(&EndpointVariant, Vec<&EndpointInstance>)> {
        self.variants
            .iter()
            .map(|v| {
                let instances = self
                    .instances
                    .iter()
                    .filter(|i| {
                        i.state == InstanceState::InService
                            && i.config_name == self.config_name
                            && i.variant == v.name
                            && i.netns_path.is_some()
                    })
                    .collect();
                (v, instances)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, variant: &str, config: &str, state: InstanceState) -> EndpointInstance {
        EndpointInstance {
            id: id.into(),
            variant: variant.into(),
            config_name: config.into(),
            eni_id: None,
            state,
            netns_path: Some("/run/netns/x".into()),
            failure_reason: None,
            session_access_key: None,
            retiring_since: None,
            placed_on: None,
            transformed: false,
            image_pull: None,
        }
    }

    fn variant(name: &str) -> EndpointVariant {
        EndpointVariant {
            name: name.into(),
            model_name: "m".into(),
            instance_type: "ml.m5.large".into(),
            current_weight: 1.0,
            desired_weight: 1.0,
            current_instance_count: 1,
            desired_instance_count: 1,
            image: "img".into(),
        }
    }

    #[test]
    fn only_in_service_instances_of_the_current_config_serve() {
        let e = SageMakerEndpoint {
            name: "e".into(),
            arn: "arn".into(),
            region: "us-east-1".into(),
            account_id: "1".into(),
            config_name: "old".into(),
            variants: vec![variant("A")],
            pending_config: Some("new".into()),
            pending_variants: vec![variant("A")],
            pending_since: None,
            status: EndpointStatus::Updating,
            failure_reason: None,
            creation_time: String::new(),
            last_modified_time: String::new(),
            instances: vec![
                instance("i-1", "A", "old", InstanceState::InService),
                instance("i-2", "A", "new", InstanceState::InService),
                instance("i-3", "A", "old", InstanceState::Starting),
                instance("i-4", "A", "old", InstanceState::Retiring),
            ],
            delete_requested: false,
            request: Box::default(),
        };
        let serving = e.serving();
        assert_eq!(serving.len(), 1);
        let ids: Vec<&str> = serving[0].1.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["i-1"]);
        assert!(!e.instances[3].is_live());
        assert!(e.instances[2].is_live());
        // A retired instance takes no new traffic here, but its host still
        // answers a front whose view has not caught up yet.
        let answering: Vec<&str> = e
            .instances
            .iter()
            .filter(|i| i.answers_requests())
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(answering, ["i-1", "i-2", "i-4"]);
    }
}

/// Where a batch transform job is; it resumes from here after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransformPhase {
    /// Its instances come up (ENI, model data, serving container, `/ping`).
    Starting,
    /// Records go from S3 through the containers back to S3.
    Transforming,
    /// Finished: the instances are to be released.
    Done,
    /// Instances released, working files removed.
    CleanedUp,
}

/// A batch transform job: serving containers on instances like an
/// endpoint's, fed from S3 by Cove instead of by callers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformJob {
    pub name: String,
    pub arn: String,
    pub region: String,
    pub account_id: String,
    /// The validated Create request.
    pub request: Box<CreateTransformJobRequest>,
    /// The model's Create request as it was when the job was created.
    pub model: Box<CreateModelInput>,
    pub status: crate::jobs::JobStatus,
    pub failure_reason: Option<String>,
    pub creation_time: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub last_modified_time: String,
    pub instances: Vec<EndpointInstance>,
    pub stop_requested: bool,
    pub phase: TransformPhase,
}

impl TransformJob {
    pub fn key_of(region: &str, account: &str, name: &str) -> String {
        crate::jobs::sagemaker_arn(region, account, &format!("transform-job/{name}"))
    }

    pub fn key(&self) -> String {
        self.arn.clone()
    }
}
