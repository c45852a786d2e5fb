//! A JSON body (SageMaker's and CloudWatch Logs' protocol) type-checked
//! and validated for a model operation's input: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let model = if pick & 1 == 0 {
        cove_wire::model::sagemaker()
    } else {
        cove_wire::model::logs()
    };
    let mut ops: Vec<&str> = model.operations.keys().map(String::as_str).collect();
    ops.sort_unstable();
    let op = model.operation(ops[usize::from(pick >> 1) % ops.len()]).expect("listed");
    let Some(input) = &op.input else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let shape = model.shape(&input.shape);
    if cove_wire::json::type_check(model, shape, &value, "").is_ok() {
        let _ = cove_wire::validate::validate(model, &input.shape, &value);
    }
});
