//! A form body (EC2's and the query protocol's) decoded for a model
//! operation's input and validated: never a panic, whatever the bytes.
#![no_main]
use cove_wire::query::{decode, parse_form, Dialect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (model, dialect) = if pick & 1 == 0 {
        (cove_wire::model::ec2(), Dialect::Ec2)
    } else {
        (cove_wire::model::iam(), Dialect::Query)
    };
    let mut ops: Vec<&str> = model.operations.keys().map(String::as_str).collect();
    ops.sort_unstable();
    let op = model.operation(ops[usize::from(pick >> 1) % ops.len()]).expect("listed");
    let Some(input) = &op.input else {
        return;
    };
    let params = parse_form(body);
    if let Ok(value) = decode(model, &input.shape, &params, dialect, &["Action", "Version"]) {
        let _ = cove_wire::validate::validate(model, &input.shape, &value);
    }
});
