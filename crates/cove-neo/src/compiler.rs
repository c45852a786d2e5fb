//! The compiler proper: ONNX in, a verified tract NNEF archive out. Built
//! only with the `compiler` feature, as tract is most of Cove's build.

use super::*;
use std::path::PathBuf;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// The largest difference allowed between the source and the compiled
/// model's outputs, relative to the largest output magnitude: the optimizer
/// may reorder float sums, never change the function.
const TOLERANCE: f32 = 1e-4;

fn input_error(detail: impl std::fmt::Display) -> String {
    format!("ClientError: InputConfiguration: {detail}")
}

/// Compiles `input` (the model archive) into `output` (the compiled
/// archive), using `work` for scratch files.
pub fn compile(input: &Path, work: &Path, output: &Path, job: &Job) -> Result<Compiled, String> {
    check_supported(job)?;
    let unpacked = work.join("model");
    std::fs::create_dir_all(&unpacked).map_err(|e| format!("InternalServerError: {e}"))?;
    unpack(input, &unpacked).map_err(|_| {
        input_error("Unable to untar input model. Please confirm the model is a tar.gz file.")
    })?;
    let mut found = vec![];
    find_onnx(&unpacked, &mut found);
    let source = match found.as_slice() {
        [one] => one.clone(),
        [] => return Err(input_error("No .onnx file found in the model archive.")),
        many => {
            let names: Vec<String> = many.iter().map(|p| relative(&unpacked, p)).collect();
            return Err(input_error(format!(
                "Exactly one .onnx file is expected in the model archive; found {}.",
                names.join(", ")
            )));
        }
    };
    let source_name = relative(&unpacked, &source);
    let source_bytes = std::fs::read(&source).map_err(|e| format!("InternalServerError: {e}"))?;

    let mut model = tract_onnx::onnx()
        .model_for_read(&mut source_bytes.as_slice())
        .map_err(|e| input_error(format!("Cannot load the ONNX model {source_name}: {e:#}")))?;
    let shapes = input_shapes(&mut model, job.data_input_config)?;
    let source_nodes = model.nodes().len();
    let typed = model
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .map_err(|e| {
            input_error(format!(
                "The model does not type-check with the input shapes {}: {e:#}",
                render_data_input_config(&shapes)
            ))
        })?;

    // The compiled form: the simplified graph as NNEF, which tract loads
    // without the ONNX front end.
    let compiled_dir = work.join("compiled");
    std::fs::create_dir_all(&compiled_dir).map_err(|e| format!("InternalServerError: {e}"))?;
    let nnef_path = compiled_dir.join("model.nnef.tar");
    let nnef = tract_nnef::nnef().with_tract_core().with_onnx();
    let file =
        std::fs::File::create(&nnef_path).map_err(|e| format!("InternalServerError: {e}"))?;
    nnef.write_to_tar(&typed, file)
        .map_err(|e| input_error(format!("The model cannot be compiled: {e:#}")))?;

    let verification = verify(&typed, &nnef, &nnef_path, &shapes)?;
    let outputs: Vec<Value> = typed
        .output_outlets()
        .unwrap_or_default()
        .iter()
        .filter_map(|o| {
            let fact = typed.outlet_fact(*o).ok()?;
            Some(json!({
                "Name": typed.node(o.node).name,
                "Shape": fact.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "DataType": format!("{:?}", fact.datum_type),
            }))
        })
        .collect();
    let inputs: Vec<Value> = typed
        .input_outlets()
        .unwrap_or_default()
        .iter()
        .zip(&shapes)
        .filter_map(|(o, (name, dims))| {
            let fact = typed.outlet_fact(*o).ok()?;
            Some(json!({"Name": name, "Shape": dims, "DataType": format!("{:?}", fact.datum_type)}))
        })
        .collect();
    let metadata = json!({
        "Compiler": format!("cove-neo {} (tract 0.21)", env!("CARGO_PKG_VERSION")),
        "Framework": "ONNX",
        "FrameworkVersion": job.framework_version,
        "Target": job.target.suffix(),
        "SourceModel": source_name,
        "SourceSha256": hex::encode(Sha256::digest(&source_bytes)),
        "CompiledModel": "model.nnef.tar",
        "Inputs": inputs,
        "Outputs": outputs,
        "Nodes": {"Source": source_nodes, "Compiled": typed.nodes().len()},
        "Verification": verification,
    });
    let metadata_text =
        serde_json::to_string_pretty(&metadata).expect("JSON values serialize") + "\n";
    std::fs::write(compiled_dir.join("compiled_model.json"), metadata_text)
        .map_err(|e| format!("InternalServerError: {e}"))?;
    pack(&compiled_dir, output).map_err(|e| format!("InternalServerError: {e}"))?;
    Ok(Compiled {
        data_input_config: render_data_input_config(&shapes),
        metadata,
    })
}

/// Fixes each input's shape from `DataInputConfig`, or reads it from the
/// model when the request gave none (every dimension must then be known).
fn input_shapes(
    model: &mut InferenceModel,
    config: Option<&str>,
) -> Result<Vec<(String, Vec<usize>)>, String> {
    let names: Vec<String> = model
        .input_outlets()
        .map_err(input_error)?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    let Some(config) = config else {
        let mut shapes = vec![];
        for (i, name) in names.iter().enumerate() {
            let fact = model.input_fact(i).map_err(input_error)?;
            match fact.shape.as_concrete_finite() {
                Ok(Some(dims)) => shapes.push((name.clone(), dims.to_vec())),
                _ => {
                    return Err(input_error(format!(
                        "DataInputConfig is required: input {name} has the shape {:?}, with dimensions the model leaves open.",
                        fact.shape
                    )))
                }
            }
        }
        return Ok(shapes);
    };
    let given = parse_data_input_config(config)?;
    for (name, _) in &given {
        if !names.contains(name) {
            return Err(input_error(format!(
                "DataInputConfig names the input {name}, which the model does not have; its inputs are {}.",
                names.join(", ")
            )));
        }
    }
    let mut shapes = vec![];
    for (i, name) in names.iter().enumerate() {
        let Some((_, dims)) = given.iter().find(|(n, _)| n == name) else {
            return Err(input_error(format!(
                "DataInputConfig gives no shape for the model's input {name}."
            )));
        };
        let datum = model
            .input_fact(i)
            .ok()
            .and_then(|f| f.datum_type.concretize())
            .unwrap_or(DatumType::F32);
        model
            .set_input_fact(i, InferenceFact::dt_shape(datum, dims.as_slice()))
            .map_err(input_error)?;
        shapes.push((name.clone(), dims.clone()));
    }
    Ok(shapes)
}

/// Runs the source graph and the compiled archive (reloaded from disk) on
/// the same deterministic input and compares every output.
fn verify(
    typed: &TypedModel,
    nnef: &tract_nnef::framework::Nnef,
    nnef_path: &Path,
    shapes: &[(String, Vec<usize>)],
) -> Result<Value, String> {
    let run_failed = |e: TractError| input_error(format!("The compiled model does not run: {e:#}"));
    let reloaded = nnef.model_for_path(nnef_path).map_err(run_failed)?;
    let mut inputs: TVec<TValue> = tvec![];
    for (i, (_, dims)) in shapes.iter().enumerate() {
        let datum = typed
            .input_fact(i)
            .map(|f| f.datum_type)
            .unwrap_or(DatumType::F32);
        let mut n = 0u32;
        let values = tract_ndarray::ArrayD::<f32>::from_shape_fn(dims.as_slice(), |_| {
            // A fixed sequence in [-1, 1): the same input on every run.
            n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (n >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        });
        let tensor = values
            .into_tensor()
            .cast_to_dt(datum)
            .map_err(run_failed)?
            .into_owned();
        inputs.push(tensor.into_tvalue());
    }
    let plan = |m: TypedModel| m.into_optimized().and_then(|m| m.into_runnable());
    let source_out = plan(typed.clone())
        .and_then(|p| p.run(inputs.clone()))
        .map_err(run_failed)?;
    let compiled_out = plan(reloaded)
        .and_then(|p| p.run(inputs))
        .map_err(run_failed)?;
    let mut max_diff = 0f32;
    let mut max_magnitude = 0f32;
    for (a, b) in source_out.iter().zip(compiled_out.iter()) {
        let a = a.cast_to::<f32>().map_err(run_failed)?;
        let b = b.cast_to::<f32>().map_err(run_failed)?;
        let (a, b) = (
            a.to_array_view::<f32>().map_err(run_failed)?,
            b.to_array_view::<f32>().map_err(run_failed)?,
        );
        if a.shape() != b.shape() {
            return Err(input_error(format!(
                "The compiled model's output has the shape {:?}, the source's {:?}.",
                b.shape(),
                a.shape()
            )));
        }
        for (x, y) in a.iter().zip(b.iter()) {
            max_diff = max_diff.max((x - y).abs());
            max_magnitude = max_magnitude.max(x.abs());
        }
    }
    if source_out.len() != compiled_out.len() || max_diff > TOLERANCE * max_magnitude.max(1.0) {
        return Err(input_error(format!(
            "The compiled model disagrees with the source (largest difference {max_diff})."
        )));
    }
    Ok(json!({
        "Input": "a fixed pseudo-random tensor in [-1, 1) per input",
        "Outputs": source_out.len(),
        "MaxAbsDifference": max_diff,
    }))
}

fn unpack(archive: &Path, into: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(archive)?;
    // `unpack` refuses entries that would land outside `into`.
    tar::Archive::new(flate2::read::GzDecoder::new(file)).unpack(into)
}

fn pack(dir: &Path, archive: &Path) -> std::io::Result<()> {
    let file = std::fs::File::create(archive)?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::default(),
    ));
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().expect("entries have names").to_owned();
        tar.append_path_with_name(&path, name)?;
    }
    tar.into_inner()?.finish()?;
    Ok(())
}

fn find_onnx(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            find_onnx(&path, found);
        } else if path.extension().is_some_and(|e| e == "onnx") {
            found.push(path);
        }
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}
