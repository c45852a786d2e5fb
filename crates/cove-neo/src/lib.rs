//! Cove's model compiler, the work of a SageMaker Neo compilation job.
//!
//! It takes the model archive a job fetched from S3 (a `.tar.gz` holding one
//! `.onnx` file), checks it and the job's `DataInputConfig` against each
//! other, type-checks and simplifies the graph with tract, writes the result
//! as an NNEF archive, reloads that archive, and runs both the source and the
//! compiled model on the same input to prove they agree before anything is
//! uploaded. The output is a `.tar.gz` with `model.nnef.tar` and
//! `compiled_model.json` (inputs, outputs, node counts, digests, the check).
//!
//! Only ONNX models for x86-64 CPU targets are compiled; anything else is
//! refused up front with a `ClientError` in the words a Neo job fails with.
//! No network, no clock: files in, files out.

use cove_shapes::sagemaker::OutputConfig;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

#[cfg(feature = "compiler")]
mod compiler;
#[cfg(feature = "compiler")]
pub use compiler::compile;

/// The `TargetDevice`s Cove compiles for: x86-64 CPU instance families.
pub const SUPPORTED_DEVICES: &[&str] = &["ml_c4", "ml_c5", "ml_m4", "ml_m5"];

/// Where a compiled model is meant to run: `OutputConfig.TargetDevice` or
/// `OutputConfig.TargetPlatform`.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Device(String),
    Platform {
        os: String,
        arch: String,
        accelerator: Option<String>,
    },
}

impl Target {
    /// The target an `OutputConfig` names, when it names exactly one.
    pub fn from_output_config(config: &OutputConfig) -> Option<Target> {
        match (&config.target_device, &config.target_platform) {
            (Some(d), None) => Some(Target::Device(d.clone())),
            (None, Some(p)) => Some(Target::Platform {
                os: p.os.clone(),
                arch: p.arch.clone(),
                accelerator: p.accelerator.clone(),
            }),
            _ => None,
        }
    }

    /// What Neo appends to the artifact's name: `ml_c5`, or `LINUX_X86_64`.
    pub fn suffix(&self) -> String {
        match self {
            Target::Device(d) => d.clone(),
            Target::Platform {
                os,
                arch,
                accelerator,
            } => match accelerator {
                Some(a) => format!("{os}_{arch}_{a}"),
                None => format!("{os}_{arch}"),
            },
        }
    }
}

/// What a job asks for.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub framework: &'a str,
    pub framework_version: Option<&'a str>,
    pub data_input_config: Option<&'a str>,
    pub target: &'a Target,
}

/// Refuses, before any data moves, what Cove cannot compile.
pub fn check_supported(job: &Job) -> Result<(), String> {
    if job.framework != "ONNX" {
        return Err(format!(
            "ClientError: InputConfiguration: Framework {} is not supported by Cove's compiler. Supported: ONNX.",
            job.framework
        ));
    }
    if let Some(v) = job.framework_version {
        if !v.starts_with("1.") {
            return Err(format!(
                "ClientError: InputConfiguration: FrameworkVersion {v} is not supported for ONNX. Supported: 1.x."
            ));
        }
    }
    let cpu = "Cove's compiler targets x86-64 CPUs only: TargetDevice ml_c4, ml_c5, ml_m4 or ml_m5, or TargetPlatform Os LINUX, Arch X86_64 without an Accelerator.";
    match job.target {
        Target::Device(d) if SUPPORTED_DEVICES.contains(&d.as_str()) => Ok(()),
        Target::Device(d) => Err(format!(
            "ClientError: OutputConfiguration: TargetDevice {d} is not supported. {cpu}"
        )),
        Target::Platform {
            os,
            arch,
            accelerator: None,
        } if os == "LINUX" && arch == "X86_64" => Ok(()),
        other => Err(format!(
            "ClientError: OutputConfiguration: TargetPlatform {} is not supported. {cpu}",
            other.suffix()
        )),
    }
}

/// `DataInputConfig` for ONNX: a JSON object of input names to shapes,
/// `{"input0": [1, 3, 224, 224]}`, in the order given.
pub fn parse_data_input_config(text: &str) -> Result<Vec<(String, Vec<usize>)>, String> {
    let bad = |detail: &str| {
        format!(
            "ClientError: InputConfiguration: DataInputConfig must be a JSON object of input names to shapes, such as {{\"input0\": [1, 3, 224, 224]}}: {detail}"
        )
    };
    let value: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let object = value.as_object().ok_or_else(|| bad("not an object"))?;
    if object.is_empty() {
        return Err(bad("no inputs"));
    }
    object
        .iter()
        .map(|(name, shape)| {
            let dims = shape
                .as_array()
                .ok_or_else(|| bad(&format!("the shape of {name} is not a list")))?
                .iter()
                .map(|d| {
                    d.as_u64()
                        .filter(|d| *d > 0)
                        .and_then(|d| usize::try_from(d).ok())
                })
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| bad(&format!("the shape of {name} must be positive integers")))?;
            Ok((name.clone(), dims))
        })
        .collect()
}

/// The shapes as `DataInputConfig` writes them.
pub fn render_data_input_config(shapes: &[(String, Vec<usize>)]) -> String {
    let object: serde_json::Map<String, Value> = shapes
        .iter()
        .map(|(name, dims)| (name.clone(), json!(dims)))
        .collect();
    Value::Object(object).to_string()
}

/// The SHA-256 of a file, as `ModelDigests.ArtifactDigest` gives it.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// A compiled model's description, also written as `compiled_model.json`.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The input shapes compiled for (the request's, or the model's own).
    pub data_input_config: String,
    pub metadata: Value,
}

/// What a job fails with when this build of Cove has no compiler.
pub const NOT_BUILT: &str = "InternalServerError: this build of Cove has no model compiler (it was built without the cargo feature `compiler`, which the default build enables)";

/// Without the `compiler` feature a job is checked as usual and then fails
/// with [`NOT_BUILT`]: a binary built without tract still serves the API.
#[cfg(not(feature = "compiler"))]
pub fn compile(_input: &Path, _work: &Path, _output: &Path, job: &Job) -> Result<Compiled, String> {
    check_supported(job)?;
    Err(NOT_BUILT.to_string())
}

#[cfg(all(test, feature = "compiler"))]
mod tests;
