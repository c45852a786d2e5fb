//! The SageMaker container contract, as pure data: the files under
//! `/opt/ml`, the environment (the `SM_*` variables the SageMaker training
//! toolkit sets) and the command, for one host of a job. The supervisor
//! writes and runs what this returns; nothing here touches the disk.

pub use cove_host::launch::HostContract;
use cove_model::jobs::SageMakerJob;
use cove_sagemaker::requests::{
    ContainerDefinition, CreateProcessingJobRequest, CreateTrainingJobRequest,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Where script mode finds the interpreter for the user's program.
pub const HOST_PYTHON: &str = "/usr/bin/python3";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Temporary credentials handed to a container that is not network-isolated.
pub struct ContainerCredentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: String,
}

impl From<cove_model::jobs::StsSession> for ContainerCredentials {
    fn from(s: cove_model::jobs::StsSession) -> Self {
        ContainerCredentials {
            access_key: s.access_key_id,
            secret_key: s.secret_access_key,
            session_token: s.session_token,
        }
    }
}

/// A hyperparameter as the program sees it: the SageMaker Python SDK sends
/// every value JSON-encoded (`"\"train.py\""`, `"2"`), the toolkit decodes it.
fn decode_hp(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

fn hp_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A training job's hyperparameter as the request gives it.
fn hyperparameter<'j>(job: &'j SageMakerJob, name: &str) -> Option<&'j str> {
    let hps = job.request.training()?.hyper_parameters.as_ref()?;
    hps.get(name).map(String::as_str)
}

/// The user's program in script mode (`sagemaker_program`), if any.
pub fn script_program(job: &SageMakerJob) -> Option<String> {
    let raw = hyperparameter(job, "sagemaker_program")?;
    Some(hp_text(&decode_hp(raw)))
}

/// The S3 URI of the script-mode source archive (`sagemaker_submit_directory`).
pub fn submit_directory(job: &SageMakerJob) -> Option<String> {
    let raw = hyperparameter(job, "sagemaker_submit_directory")?;
    Some(hp_text(&decode_hp(raw))).filter(|s| s.starts_with("s3://"))
}

fn env_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn common_env(
    job: &SageMakerJob,
    credentials: Option<&ContainerCredentials>,
) -> Vec<(String, String)> {
    base_env(
        &job.region,
        credentials.filter(|_| !job.request.network_isolation()),
        job.request.environment(),
    )
}

/// What every container gets: a `PATH`, the region, the role's credentials
/// (`None` for a network-isolated one) and the user's `Environment`.
fn base_env(
    region: &str,
    credentials: Option<&ContainerCredentials>,
    user_env: Option<&BTreeMap<String, String>>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), PATH.to_string()),
        ("HOME".to_string(), "/tmp".to_string()),
        ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
        ("AWS_REGION".to_string(), region.to_string()),
        ("AWS_DEFAULT_REGION".to_string(), region.to_string()),
    ];
    if let Some(c) = credentials {
        env.push(("AWS_ACCESS_KEY_ID".into(), c.access_key.clone()));
        env.push(("AWS_SECRET_ACCESS_KEY".into(), c.secret_key.clone()));
        env.push(("AWS_SESSION_TOKEN".into(), c.session_token.clone()));
    }
    for (k, v) in user_env.into_iter().flatten() {
        env.push((k.clone(), v.clone()));
    }
    env
}

/// Cove's serving runtime for framework images in script mode: it loads the
/// user's inference script (`model_fn`, `input_fn`, `predict_fn`,
/// `output_fn`, or `transform_fn`) and serves `/ping` and `/invocations`.
pub const SERVING_RUNTIME: &str = include_str!("../guest/serving.py");
/// Where the serving runtime is written, relative to `/opt/ml`.
pub const SERVING_RUNTIME_PATH: &str = "cove/serving.py";
/// The port a serving container listens on, as SageMaker requires.
pub use cove_host::http::SERVING_PORT;

/// Cove's built-in Studio app server (see `studio_app.py`).
pub const STUDIO_APP: &str = include_str!("../guest/studio_app.py");
/// Where the Studio app server is written, relative to `/opt/ml`.
pub const STUDIO_APP_PATH: &str = "cove/studio_app.py";
/// The port a Studio app listens on inside its ENI's namespace.
pub const STUDIO_PORT: u16 = 8888;
/// Where a user's home directory is inside a Studio app, as on AWS.
pub const STUDIO_HOME: &str = "/home/sagemaker-user";

/// The contract of a Studio app: the role's credentials, `HOME`, and the
/// command. A configured command (`{base_url}`, `{port}` and `{home}`
/// filled in) wins; else a JupyterServer app runs JupyterLab when the host
/// has it, and anything else runs Cove's built-in app server.
pub fn studio_app(
    region: &str,
    credentials: Option<&ContainerCredentials>,
    app_type: &str,
    user: &str,
    base_url: &str,
    command: Option<&[String]>,
) -> HostContract {
    let mut env: Vec<(String, String)> = base_env(region, credentials, None)
        .into_iter()
        .filter(|(k, _)| k != "HOME")
        .collect();
    env.extend([
        ("HOME".to_string(), STUDIO_HOME.to_string()),
        ("SAGEMAKER_APP_TYPE".to_string(), app_type.to_string()),
        ("COVE_STUDIO_USER".to_string(), user.to_string()),
        ("COVE_STUDIO_BASE_URL".to_string(), base_url.to_string()),
        ("COVE_STUDIO_PORT".to_string(), STUDIO_PORT.to_string()),
    ]);
    let fill = |a: &String| {
        a.replace("{base_url}", base_url)
            .replace("{port}", &STUDIO_PORT.to_string())
            .replace("{home}", STUDIO_HOME)
    };
    let jupyter_lab = ["/usr/local/bin/jupyter-lab", "/usr/bin/jupyter-lab"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let argv = match (command, jupyter_lab) {
        (Some(c), _) if !c.is_empty() => c.iter().map(fill).collect(),
        (_, Some(lab)) if app_type == "JupyterServer" => vec![
            lab.to_string(),
            "--ip=0.0.0.0".into(),
            format!("--port={STUDIO_PORT}"),
            "--no-browser".into(),
            format!("--ServerApp.base_url={base_url}"),
            "--IdentityProvider.token=".into(),
            "--ServerApp.password=".into(),
            "--ServerApp.allow_remote_access=True".into(),
            format!("--ServerApp.root_dir={STUDIO_HOME}"),
        ],
        _ => vec![
            HOST_PYTHON.to_string(),
            format!("/opt/ml/{STUDIO_APP_PATH}"),
        ],
    };
    HostContract {
        files: vec![(STUDIO_APP_PATH.to_string(), STUDIO_APP.to_string())],
        env,
        argv,
        workdir: STUDIO_HOME.into(),
    }
}

/// Cove's Clarify analyzer: run for processing jobs whose image is AWS's
/// `sagemaker-clarify-processing` (see `clarify.py`).
pub const CLARIFY_ANALYZER: &str = include_str!("../guest/clarify.py");
/// Where the Clarify analyzer is written, relative to `/opt/ml`.
pub const CLARIFY_ANALYZER_PATH: &str = "cove/clarify.py";

/// Whether an image URI names SageMaker Clarify's processing image, in any
/// account and region (`<account>.dkr.ecr.<region>.amazonaws.com/sagemaker-clarify-processing:<tag>`).
pub fn is_clarify_image(uri: &str) -> bool {
    let repository = uri.split_once('/').map(|(_, r)| r).unwrap_or_default();
    let repository = repository.split([':', '@']).next().unwrap_or_default();
    repository == "sagemaker-clarify-processing"
}

/// How a model's container is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// An imported image: its own `serve` program.
    Image,
    /// A framework image that is not imported: Cove's serving runtime runs
    /// the script named by `SAGEMAKER_PROGRAM` with the host's Python.
    Script,
}

/// The contract of a serving container (an endpoint instance or a batch
/// transform host) for the model's `container` definition.
pub fn serving(
    region: &str,
    container: &ContainerDefinition,
    credentials: Option<&ContainerCredentials>,
    mode: Serving,
) -> HostContract {
    let mut env = base_env(region, credentials, container.environment.as_ref());
    env.push(("SAGEMAKER_BIND_TO_PORT".into(), SERVING_PORT.to_string()));
    let (argv, files) = match mode {
        Serving::Image => (vec!["serve".to_string()], vec![]),
        Serving::Script => (
            vec![
                HOST_PYTHON.to_string(),
                format!("/opt/ml/{SERVING_RUNTIME_PATH}"),
            ],
            vec![(
                SERVING_RUNTIME_PATH.to_string(),
                SERVING_RUNTIME.to_string(),
            )],
        ),
    };
    HostContract {
        files,
        env,
        argv,
        workdir: "/opt/ml".into(),
    }
}

/// Cove's training toolkit for framework images in script mode: it installs
/// the source directory's `requirements.txt`, runs the user's script and
/// reports a failure in the SageMaker toolkit's words.
pub const TRAINING_TOOLKIT: &str = include_str!("../guest/training.py");
/// Where the training toolkit is written, relative to `/opt/ml`.
pub const TRAINING_TOOLKIT_PATH: &str = "cove/training.py";

/// The module the SageMaker toolkit of a framework image would start
/// (`SM_FRAMEWORK_MODULE`), known from the image's repository name; `None`
/// for an image that is not one of AWS's framework images.
pub fn framework_module(image: &str) -> Option<&'static str> {
    let repository = image.split_once('/').map(|(_, r)| r).unwrap_or_default();
    let repository = repository.split([':', '@']).next().unwrap_or_default();
    Some(match repository {
        "sagemaker-scikit-learn" => "sagemaker_sklearn_container.training:main",
        "pytorch-training" => "sagemaker_pytorch_container.training:main",
        "sagemaker-xgboost" => "sagemaker_xgboost_container.training:main",
        "tensorflow-training" => "sagemaker_tensorflow_container.training:main",
        "huggingface-pytorch-training" => "sagemaker_huggingface_pytorch_container.training:main",
        "mxnet-training" => "sagemaker_mxnet_container.training:main",
        _ => return None,
    })
}

fn resource_config(job: &SageMakerJob, host: &str, instance_type: &str) -> Value {
    let hosts: Vec<&str> = job.hosts.iter().map(|h| h.name.as_str()).collect();
    json!({
        "current_host": host,
        "current_instance_type": instance_type,
        "current_group_name": "homogeneousCluster",
        "hosts": hosts,
        "instance_groups": [{
            "instance_group_name": "homogeneousCluster",
            "instance_type": instance_type,
            "hosts": hosts,
        }],
        "network_interface_name": "eth0",
    })
}

/// The contract for host `host` of a training job.
pub fn training(
    job: &SageMakerJob,
    host: &str,
    cpus: f64,
    gpus: u32,
    credentials: Option<&ContainerCredentials>,
) -> HostContract {
    let default = CreateTrainingJobRequest::default();
    let req = job.request.training().unwrap_or(&default);
    let instance_type = req
        .resource_config
        .as_ref()
        .and_then(|c| c.instance_type.as_deref())
        .unwrap_or_default();
    let raw_hps: Map<String, Value> = req
        .hyper_parameters
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let hps: Map<String, Value> = raw_hps
        .iter()
        .map(|(k, v)| (k.clone(), decode_hp(v.as_str().unwrap_or_default())))
        .collect();
    let user_hps: Map<String, Value> = hps
        .iter()
        .filter(|(k, _)| !k.starts_with("sagemaker_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let algo = req.algorithm_specification.as_ref();
    let default_mode = algo.map_or("File", |a| a.training_input_mode.as_str());
    let mut channels = Vec::new();
    let mut input_config = Map::new();
    for c in req.input_data_config.iter().flatten() {
        let name = c.channel_name.clone();
        let distribution = c
            .data_source
            .s3_data_source
            .as_ref()
            .and_then(|s| s.s3_data_distribution_type.as_deref());
        let mut entry = json!({
            "TrainingInputMode": c.input_mode.as_deref().unwrap_or(default_mode),
            "S3DistributionType": distribution.unwrap_or("FullyReplicated"),
            "RecordWrapperType": c.record_wrapper_type.as_deref().unwrap_or("None"),
        });
        if let Some(ct) = &c.content_type {
            entry["ContentType"] = json!(ct);
        }
        input_config.insert(name.clone(), entry);
        channels.push(name);
    }
    let resource = resource_config(job, host, instance_type);
    let hosts: Vec<&str> = job.hosts.iter().map(|h| h.name.as_str()).collect();
    let program = script_program(job);
    let user_args: Vec<String> = user_hps
        .iter()
        .flat_map(|(k, v)| [format!("--{k}"), hp_text(v)])
        .collect();

    let mut env = common_env(job, credentials);
    let sm = |k: &str, v: String| (format!("SM_{k}"), v);
    env.extend([
        sm("HOSTS", json!(hosts).to_string()),
        sm("CURRENT_HOST", host.to_string()),
        sm("CURRENT_INSTANCE_TYPE", instance_type.to_string()),
        sm(
            "NUM_CPUS",
            cove_model::convert::f64_to_u64(cpus.ceil()).to_string(),
        ),
        sm("NUM_GPUS", gpus.to_string()),
        sm("MODEL_DIR", "/opt/ml/model".to_string()),
        sm("INPUT_DIR", "/opt/ml/input".to_string()),
        sm("INPUT_CONFIG_DIR", "/opt/ml/input/config".to_string()),
        sm("OUTPUT_DIR", "/opt/ml/output".to_string()),
        sm("OUTPUT_DATA_DIR", "/opt/ml/output/data".to_string()),
        sm(
            "OUTPUT_INTERMEDIATE_DIR",
            "/opt/ml/output/intermediate".to_string(),
        ),
        sm("CHANNELS", json!(channels).to_string()),
        sm("HPS", Value::Object(user_hps.clone()).to_string()),
        sm("USER_ARGS", json!(user_args).to_string()),
        sm("RESOURCE_CONFIG", resource.to_string()),
        sm(
            "INPUT_DATA_CONFIG",
            Value::Object(input_config.clone()).to_string(),
        ),
        sm("NETWORK_INTERFACE_NAME", "eth0".to_string()),
        sm("LOG_LEVEL", "20".to_string()),
        ("TRAINING_JOB_NAME".to_string(), job.name.clone()),
        ("TRAINING_JOB_ARN".to_string(), job.arn.clone()),
    ]);
    for c in &channels {
        env.push(sm(
            &format!("CHANNEL_{}", env_name(c)),
            format!("/opt/ml/input/data/{c}"),
        ));
    }
    for (k, v) in &user_hps {
        env.push(sm(&format!("HP_{}", env_name(k)), hp_text(v)));
    }
    if let Some(p) = &program {
        env.push(sm(
            "MODULE_NAME",
            p.trim_end_matches(".py").replace('/', "."),
        ));
        env.push(sm("MODULE_DIR", submit_directory(job).unwrap_or_default()));
        env.push(sm("USER_ENTRY_POINT", p.clone()));
    }

    let framework = algo
        .and_then(|a| a.training_image.as_deref())
        .and_then(framework_module)
        .unwrap_or_default();
    let framework_params: Map<String, Value> = hps
        .iter()
        .filter(|(k, _)| {
            k.starts_with("sagemaker_")
                && !matches!(
                    k.as_str(),
                    "sagemaker_program"
                        | "sagemaker_submit_directory"
                        | "sagemaker_region"
                        | "sagemaker_container_log_level"
                        | "sagemaker_job_name"
                )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let channel_dirs: Map<String, Value> = channels
        .iter()
        .map(|c| (c.clone(), json!(format!("/opt/ml/input/data/{c}"))))
        .collect();
    let cpu_count = cove_model::convert::f64_to_u64(cpus.ceil());
    let training_env = json!({
        "additional_framework_parameters": framework_params,
        "channel_input_dirs": channel_dirs,
        "current_host": host,
        "current_instance_group": "homogeneousCluster",
        "current_instance_group_hosts": hosts,
        "current_instance_type": instance_type,
        "distribution_hosts": [],
        "distribution_instance_groups": [],
        "framework_module": framework,
        "hosts": hosts,
        "hyperparameters": user_hps,
        "input_config_dir": "/opt/ml/input/config",
        "input_data_config": input_config,
        "input_dir": "/opt/ml/input",
        "instance_groups": ["homogeneousCluster"],
        "instance_groups_dict": {"homogeneousCluster": {
            "instance_group_name": "homogeneousCluster",
            "instance_type": instance_type,
            "hosts": hosts,
        }},
        "is_hetero": false,
        "is_master": hosts.first() == Some(&host),
        "job_name": job.name,
        "log_level": 20,
        "master_hostname": hosts.first().copied().unwrap_or(host),
        "model_dir": "/opt/ml/model",
        "module_dir": submit_directory(job).unwrap_or_default(),
        "module_name": program.as_deref().map(|p| p.trim_end_matches(".py").replace('/', ".")).unwrap_or_default(),
        "network_interface_name": "eth0",
        "num_cpus": cpu_count,
        "num_gpus": gpus,
        "num_neurons": 0,
        "output_data_dir": "/opt/ml/output/data",
        "output_dir": "/opt/ml/output",
        "output_intermediate_dir": "/opt/ml/output/intermediate",
        "resource_config": resource,
        "user_entry_point": program.clone().unwrap_or_default(),
    });
    env.extend([
        sm("TRAINING_ENV", training_env.to_string()),
        sm("FRAMEWORK_MODULE", framework.to_string()),
        sm(
            "FRAMEWORK_PARAMS",
            Value::Object(framework_params).to_string(),
        ),
        sm("NUM_NEURONS", "0".to_string()),
        sm("CURRENT_INSTANCE_GROUP", "homogeneousCluster".to_string()),
        sm("CURRENT_INSTANCE_GROUP_HOSTS", json!(hosts).to_string()),
        sm("INSTANCE_GROUPS", json!(["homogeneousCluster"]).to_string()),
        sm("DISTRIBUTION_INSTANCE_GROUPS", "[]".to_string()),
        sm("IS_HETERO", "false".to_string()),
    ]);

    let entry: Vec<String> = algo
        .and_then(|a| a.container_entrypoint.clone())
        .unwrap_or_default();
    let (argv, workdir) = if !entry.is_empty() {
        let mut argv = entry;
        argv.extend(
            algo.and_then(|a| a.container_arguments.clone())
                .into_iter()
                .flatten(),
        );
        (argv, "/opt/ml".to_string())
    } else if program.is_some() {
        // The toolkit runs the script with the arguments in `SM_USER_ARGS`.
        let argv = vec![
            HOST_PYTHON.to_string(),
            format!("/opt/ml/{TRAINING_TOOLKIT_PATH}"),
        ];
        (argv, "/opt/ml/code".to_string())
    } else {
        (vec!["train".to_string()], "/opt/ml".to_string())
    };

    let mut files = vec![
        (
            "input/config/hyperparameters.json".to_string(),
            Value::Object(raw_hps).to_string(),
        ),
        (
            "input/config/resourceconfig.json".to_string(),
            resource.to_string(),
        ),
        (
            "input/config/inputdataconfig.json".to_string(),
            Value::Object(input_config).to_string(),
        ),
    ];
    if program.is_some()
        && argv
            .get(1)
            .is_some_and(|a| a.ends_with(TRAINING_TOOLKIT_PATH))
    {
        files.push((
            TRAINING_TOOLKIT_PATH.to_string(),
            TRAINING_TOOLKIT.to_string(),
        ));
    }
    HostContract {
        files,
        env,
        argv,
        workdir,
    }
}

/// The contract for host `host` of a processing job.
pub fn processing(
    job: &SageMakerJob,
    host: &str,
    credentials: Option<&ContainerCredentials>,
) -> HostContract {
    let default = CreateProcessingJobRequest::default();
    let req = job.request.processing().unwrap_or(&default);
    let instance_type = req
        .processing_resources
        .cluster_config
        .instance_type
        .as_str();
    let app = &req.app_specification;
    let mut argv = app.container_entrypoint.clone().unwrap_or_default();
    let mut files = vec![];
    if argv.is_empty() && is_clarify_image(&app.image_uri) {
        argv = vec![
            HOST_PYTHON.to_string(),
            format!("/opt/ml/{CLARIFY_ANALYZER_PATH}"),
        ];
        files.push((
            CLARIFY_ANALYZER_PATH.to_string(),
            CLARIFY_ANALYZER.to_string(),
        ));
    }
    argv.extend(app.container_arguments.iter().flatten().cloned());
    let mut env = common_env(job, credentials);
    env.push(("PROCESSING_JOB_NAME".into(), job.name.clone()));
    let config = json!({
        "ProcessingJobArn": job.arn,
        "ProcessingJobName": job.name,
        "AppSpecification": app,
        "Environment": req.environment,
        "NetworkConfig": req.network_config,
        "ProcessingInputs": req.processing_inputs,
        "ProcessingOutputConfig": req.processing_output_config,
        "ProcessingResources": req.processing_resources,
        "RoleArn": req.role_arn,
        "StoppingCondition": req.stopping_condition,
    });
    files.extend([
        ("config/processingjobconfig.json".into(), config.to_string()),
        (
            "config/resourceconfig.json".into(),
            json!({"current_host": host, "hosts": job.hosts.iter().map(|h| h.name.clone()).collect::<Vec<_>>(), "current_instance_type": instance_type}).to_string(),
        ),
    ]);
    HostContract {
        files,
        env,
        argv,
        workdir: "/opt/ml/processing".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clarify_images_are_known_in_any_account_and_region() {
        assert!(is_clarify_image(
            "205585389593.dkr.ecr.us-east-1.amazonaws.com/sagemaker-clarify-processing:1.0"
        ));
        assert!(is_clarify_image(
            "017069133835.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-clarify-processing@sha256:00"
        ));
        assert!(!is_clarify_image(
            "205585389593.dkr.ecr.us-east-1.amazonaws.com/sagemaker-clarify-processing-fork:1.0"
        ));
        assert!(!is_clarify_image("sagemaker-clarify-processing"));
    }
    use cove_model::jobs::{JobHost, JobKind, JobPhase, JobRequest};

    /// A training job whose request is `request` with the members the
    /// tests do not vary.
    fn job(mut given: Value) -> SageMakerJob {
        given["TrainingJobName"] = json!("j1");
        given["RoleArn"] = json!("arn:aws:iam::000000000000:role/r");
        given["OutputDataConfig"] = json!({"S3OutputPath": "s3://b/out"});
        if let Some(algo) = given["AlgorithmSpecification"].as_object_mut() {
            algo.entry("TrainingInputMode").or_insert(json!("File"));
        }
        let request = serde_json::from_value(given).unwrap();
        SageMakerJob {
            kind: JobKind::Training,
            name: "j1".into(),
            arn: "arn:aws:sagemaker:us-east-1:000000000000:training-job/j1".into(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            request,
            status: cove_model::jobs::JobStatus::InProgress,
            secondary_status: cove_model::jobs::SecondaryStatus::Starting,
            transitions: vec![],
            failure_reason: None,
            exit_message: None,
            creation_time: String::new(),
            start_time: None,
            end_time: None,
            last_modified_time: String::new(),
            phase: JobPhase::Starting,
            hosts: vec![JobHost::new("algo-1".into()), JobHost::new("algo-2".into())],
            stop_requested: false,
            model_artifacts: None,
            billable_seconds: None,
            session_access_key: None,
            outcome: None,
            terminate_containers: false,
            image_pull: None,
        }
    }

    fn env<'a>(c: &'a HostContract, k: &str) -> Option<&'a str> {
        c.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn script_mode_runs_the_program_with_decoded_hyperparameters() {
        let j = job(json!({
            "HyperParameters": {
                "sagemaker_program": "\"train.py\"",
                "sagemaker_submit_directory": "\"s3://b/src/sourcedir.tar.gz\"",
                "epochs": "3",
                "learning-rate": "0.1",
            },
            "AlgorithmSpecification": {
                "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
                "TrainingInputMode": "File"
            },
            "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": "s3://b/d", "S3DataType": "S3Prefix"}}}],
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2},
        }));
        let c = training(&j, "algo-2", 2.0, 0, None);
        // The toolkit runs the program with the decoded hyperparameters.
        assert_eq!(c.argv, vec![HOST_PYTHON, "/opt/ml/cove/training.py"]);
        assert!(c
            .files
            .iter()
            .any(|(p, body)| p == TRAINING_TOOLKIT_PATH && body == TRAINING_TOOLKIT));
        assert_eq!(
            env(&c, "SM_USER_ARGS"),
            Some("[\"--epochs\",\"3\",\"--learning-rate\",\"0.1\"]")
        );
        assert_eq!(env(&c, "SM_USER_ENTRY_POINT"), Some("train.py"));
        assert_eq!(
            env(&c, "SM_FRAMEWORK_MODULE"),
            Some("sagemaker_sklearn_container.training:main")
        );
        let training_env: Value =
            serde_json::from_str(env(&c, "SM_TRAINING_ENV").unwrap()).unwrap();
        assert_eq!(training_env["hosts"], json!(["algo-1", "algo-2"]));
        assert_eq!(training_env["current_host"], "algo-2");
        assert_eq!(training_env["is_master"], false);
        assert_eq!(training_env["master_hostname"], "algo-1");
        assert_eq!(training_env["hyperparameters"]["epochs"], 3);
        assert_eq!(
            training_env["channel_input_dirs"]["train"],
            "/opt/ml/input/data/train"
        );
        assert_eq!(training_env["module_dir"], "s3://b/src/sourcedir.tar.gz");
        assert_eq!(training_env["num_cpus"], 2);
        assert_eq!(
            env(&c, "SM_CHANNEL_TRAIN"),
            Some("/opt/ml/input/data/train")
        );
        assert_eq!(env(&c, "SM_HP_LEARNING_RATE"), Some("0.1"));
        assert_eq!(env(&c, "SM_HOSTS"), Some("[\"algo-1\",\"algo-2\"]"));
        assert_eq!(env(&c, "SM_CURRENT_HOST"), Some("algo-2"));
        assert_eq!(env(&c, "SM_MODULE_NAME"), Some("train"));
        assert!(env(&c, "AWS_ACCESS_KEY_ID").is_none());
        let resource: Value = serde_json::from_str(
            &c.files
                .iter()
                .find(|(p, _)| p.ends_with("resourceconfig.json"))
                .unwrap()
                .1,
        )
        .unwrap();
        assert_eq!(resource["current_host"], "algo-2");
    }

    #[test]
    fn isolated_containers_get_no_credentials() {
        let creds = ContainerCredentials {
            access_key: "ASIA".into(),
            secret_key: "s".into(),
            session_token: "t".into(),
        };
        let mut j = job(json!({"AlgorithmSpecification": {"TrainingImage": "x"}}));
        assert_eq!(
            env(
                &training(&j, "algo-1", 1.0, 0, Some(&creds)),
                "AWS_ACCESS_KEY_ID"
            ),
            Some("ASIA")
        );
        if let JobRequest::Training(r) = &mut j.request {
            r.enable_network_isolation = Some(true);
        }
        let c = training(&j, "algo-1", 1.0, 0, Some(&creds));
        assert!(env(&c, "AWS_ACCESS_KEY_ID").is_none());
        assert_eq!(c.argv, vec!["train"]);
    }
}
