//! The compiler on small ONNX graphs built here with ONNX's own protobuf
//! types, packed the way a training job's `model.tar.gz` is.

use super::*;
use prost::Message;
use std::path::PathBuf;
use tract_onnx::pb;

/// An `OutputConfig` with the output location the tests do not vary.
fn output_config(mut v: serde_json::Value) -> OutputConfig {
    v["S3OutputLocation"] = json!("s3://b/out");
    serde_json::from_value(v).unwrap()
}

fn dim(d: &str) -> pb::tensor_shape_proto::Dimension {
    use pb::tensor_shape_proto::dimension::Value;
    let value = match d.parse::<i64>() {
        Ok(n) => Value::DimValue(n),
        Err(_) => Value::DimParam(d.to_string()),
    };
    pb::tensor_shape_proto::Dimension {
        value: Some(value),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[&str]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims.iter().map(|d| dim(d)).collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// `y = relu(x · W + b)` with `x: [batch, 4]`, `W: [4, 3]`.
fn linear_relu(batch: &str) -> Vec<u8> {
    let weights = pb::TensorProto {
        name: "W".into(),
        dims: vec![4, 3],
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: (0..12).map(|i| i as f32 / 10.0 - 0.5).collect(),
        ..Default::default()
    };
    let bias = pb::TensorProto {
        name: "b".into(),
        dims: vec![3],
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: vec![0.5, -1.0, 0.25],
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: "linear".into(),
        node: vec![
            node("MatMul", &["x", "W"], "h"),
            node("Add", &["h", "b"], "z"),
            node("Relu", &["z"], "y"),
        ],
        initializer: vec![weights, bias],
        input: vec![value_info("x", &[batch, "4"])],
        output: vec![value_info("y", &[batch, "3"])],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn archive(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join("model.tar.gz");
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    ));
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
    path
}

fn job<'a>(config: Option<&'a str>, target: &'a Target) -> Job<'a> {
    Job {
        framework: "ONNX",
        framework_version: Some("1.13"),
        data_input_config: config,
        target,
    }
}

/// Compiles an archive of `files`; the directory holds the output until dropped.
fn run(
    files: &[(&str, &[u8])],
    config: Option<&str>,
) -> (Result<Compiled, String>, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let input = archive(dir.path(), files);
    let output = dir.path().join("out.tar.gz");
    let target = Target::Device("ml_c5".into());
    let result = compile(
        &input,
        &dir.path().join("work"),
        &output,
        &job(config, &target),
    );
    (result, output, dir)
}

fn entries(archive: &Path) -> Vec<String> {
    let file = std::fs::File::open(archive).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut names: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_onnx_model_compiles_to_a_verified_nnef_archive() {
    let model = linear_relu("N");
    let (result, output, _dir) = run(&[("model.onnx", &model)], Some(r#"{"x": [2, 4]}"#));
    let compiled = result.unwrap();
    assert_eq!(compiled.data_input_config, r#"{"x":[2,4]}"#);
    assert_eq!(entries(&output), ["compiled_model.json", "model.nnef.tar"]);
    let m = &compiled.metadata;
    assert_eq!(m["Target"], "ml_c5");
    assert_eq!(m["Inputs"][0]["Shape"], json!([2, 4]));
    assert_eq!(m["Outputs"][0]["Shape"], json!(["2", "3"]));
    assert_eq!(m["Verification"]["Outputs"], 1);
    assert!(m["Verification"]["MaxAbsDifference"].as_f64().unwrap() <= 1e-6);
    assert_eq!(
        m["SourceSha256"],
        hex::encode(Sha256::digest(&model)),
        "{m:#}"
    );
}

#[test]
fn a_model_with_fixed_shapes_needs_no_data_input_config_and_reports_them() {
    let model = linear_relu("1");
    let (result, _, _dir) = run(&[("nested/dir/m.onnx", &model)], None);
    let compiled = result.unwrap();
    assert_eq!(compiled.data_input_config, r#"{"x":[1,4]}"#);
    assert_eq!(compiled.metadata["SourceModel"], "nested/dir/m.onnx");
}

#[test]
fn open_dimensions_without_data_input_config_are_refused() {
    let (result, _, _dir) = run(&[("model.onnx", &linear_relu("N"))], None);
    let err = result.unwrap_err();
    assert!(
        err.starts_with("ClientError: InputConfiguration: DataInputConfig is required: input x"),
        "{err}"
    );
}

#[test]
fn data_input_config_must_name_the_model_inputs_with_fitting_shapes() {
    let model = linear_relu("N");
    let (result, _, _dir) = run(&[("model.onnx", &model)], Some(r#"{"input0": [1, 4]}"#));
    let err = result.unwrap_err();
    assert!(
        err.contains("names the input input0, which the model does not have; its inputs are x."),
        "{err}"
    );
    let (result, _, _dir) = run(&[("model.onnx", &model)], Some(r#"{"x": [1, 5]}"#));
    let err = result.unwrap_err();
    assert!(
        err.contains("does not type-check with the input shapes {\"x\":[1,5]}"),
        "{err}"
    );
    let (result, _, _dir) = run(&[("model.onnx", &model)], Some("[1, 4]"));
    assert!(result.unwrap_err().contains("must be a JSON object"));
}

#[test]
fn archives_without_exactly_one_loadable_onnx_file_are_refused() {
    let model = linear_relu("1");
    let (result, _, _dir) = run(&[("README", b"no model here")], None);
    assert_eq!(
        result.unwrap_err(),
        "ClientError: InputConfiguration: No .onnx file found in the model archive."
    );
    let (result, _, _dir) = run(&[("a.onnx", &model), ("b.onnx", &model)], None);
    assert!(result.unwrap_err().contains("found a.onnx, b.onnx."));
    let (result, _, _dir) = run(&[("model.onnx", b"not protobuf at all")], None);
    assert!(result
        .unwrap_err()
        .starts_with("ClientError: InputConfiguration: Cannot load the ONNX model model.onnx:"));

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model.tar.gz");
    std::fs::write(&input, b"plain text, not gzip").unwrap();
    let target = Target::Device("ml_m5".into());
    let err = compile(
        &input,
        &dir.path().join("w"),
        &dir.path().join("o"),
        &job(None, &target),
    )
    .unwrap_err();
    assert!(err.contains("Unable to untar input model"), "{err}");
}

#[test]
fn only_onnx_for_x86_64_cpus_is_supported() {
    let cpu = Target::Device("ml_c5".into());
    assert!(check_supported(&job(None, &cpu)).is_ok());
    let gpu = Target::Device("ml_p3".into());
    let err = check_supported(&job(None, &gpu)).unwrap_err();
    assert!(
        err.starts_with("ClientError: OutputConfiguration: TargetDevice ml_p3 is not supported.")
    );
    let pytorch = Job {
        framework: "PYTORCH",
        ..job(None, &cpu)
    };
    assert_eq!(
        check_supported(&pytorch).unwrap_err(),
        "ClientError: InputConfiguration: Framework PYTORCH is not supported by Cove's compiler. Supported: ONNX."
    );
    let linux = Target::from_output_config(&output_config(
        json!({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}}),
    ))
    .unwrap();
    assert_eq!(linux.suffix(), "LINUX_X86_64");
    assert!(check_supported(&job(None, &linux)).is_ok());
    let arm = Target::from_output_config(&output_config(
        json!({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}}),
    ))
    .unwrap();
    assert!(check_supported(&job(None, &arm)).is_err());
    let nvidia = Target::from_output_config(&output_config(
        json!({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"}}),
    ))
    .unwrap();
    assert!(check_supported(&job(None, &nvidia))
        .unwrap_err()
        .contains("LINUX_X86_64_NVIDIA"));
    assert_eq!(
        Target::from_output_config(&output_config(
            json!({"TargetDevice": "ml_c5", "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}})
        )),
        None
    );
}
