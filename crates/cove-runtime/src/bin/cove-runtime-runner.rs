//! `cove-runtime-runner run-container <spec>`: the runner without the rest
//! of Cove, for the crate's tests and for debugging a container by hand.
//! `cove run-container` is the same entry point.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() != 3 || args[1] != "run-container" {
        eprintln!("usage: cove-runtime-runner run-container <state_dir>/spec.json");
        std::process::exit(2);
    }
    cove_runtime::run_container_main(std::path::Path::new(&args[2]))
}
