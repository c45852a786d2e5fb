//! The Neo compilation driver: fetches the model through the job's ENI,
//! runs the compiler as a child in an empty network namespace, and uploads
//! the compiled archive.

use crate::assume_job_role;
use crate::driver::{driver, Driver, Step};
use crate::release;
use crate::session_of;
use crate::training::ARTIFACT_UPLOAD_FAILED;
use crate::training::DATA_DOWNLOAD_FAILED;
use crate::workers::Ended;
use crate::REQUESTER;
use cove_host::eni_netns;
use cove_host::logs::LogShipper;
use cove_host::s3::joined;
use cove_host::s3::spawn_in_network;
use cove_host::s3::{parse_s3_uri, transfer_failure, TransferError};
use cove_model::ids::now_rfc3339;
use cove_model::jobs::{CompilationJob, CompilationPhase, CompilationStatus};
use cove_neo::Target;
use cove_sagemaker::compilation::{artifact_uri, max_runtime};
use cove_sagemaker::requests::CreateCompilationJobRequest;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LOG_GROUP: &str = "/aws/sagemaker/CompilationJobs";

/// What a compilation request asks the compiler for.
fn neo_job<'r>(request: &'r CreateCompilationJobRequest, target: &'r Target) -> cove_neo::Job<'r> {
    let input = request.input_config.as_ref();
    cove_neo::Job {
        framework: input.map(|i| i.framework.as_str()).unwrap_or_default(),
        framework_version: input.and_then(|i| i.framework_version.as_deref()),
        data_input_config: input.and_then(|i| i.data_input_config.as_deref()),
        target,
    }
}

driver!(
    /// Neo compilation jobs.
    Compilation
);

impl Driver for Compilation {
    type Resource = CompilationJob;

    fn step(&self, r: &CompilationJob) -> anyhow::Result<Step> {
        match r.phase {
            CompilationPhase::Starting => self.compilation_start(r)?,
            CompilationPhase::Compiling => self.compilation_run(r)?,
            CompilationPhase::Done => self.compilation_cleanup(r)?,
            CompilationPhase::CleanedUp => return Ok(Step::Done),
        }
        Ok(Step::Next)
    }

    fn fail(&self, r: &CompilationJob, reason: &str) -> anyhow::Result<()> {
        self.finish_compilation(
            &r.key(),
            CompilationStatus::Failed,
            Some(reason.to_string()),
        )
    }
}

impl Compilation {
    fn update_compilation(
        &self,
        key: &str,
        f: impl FnOnce(&mut CompilationJob),
    ) -> anyhow::Result<()> {
        crate::workers::update(&self.store, key, f)
    }

    fn finish_compilation(
        &self,
        key: &str,
        status: CompilationStatus,
        reason: Option<String>,
    ) -> anyhow::Result<()> {
        if let Some(r) = &reason {
            tracing::info!(job = %key, reason = %r, "compilation job failed");
        }
        self.update_compilation(key, |j| j.finish(status, reason, &now_rfc3339()))
    }

    fn compilation_dir(&self, j: &CompilationJob) -> PathBuf {
        crate::workload_dir(&self.settings.jobs_dir, &j.arn)
    }

    fn compilation_start(&self, j: &CompilationJob) -> anyhow::Result<()> {
        let key = j.key();
        if j.stop_requested {
            return self.finish_compilation(&key, CompilationStatus::Stopped, None);
        }
        let target =
            Target::from_output_config(&j.request.output_config).expect("checked at create");
        if let Err(reason) = cove_neo::check_supported(&neo_job(&j.request, &target)) {
            return self.finish_compilation(&key, CompilationStatus::Failed, Some(reason));
        }
        let vpc = j.request.vpc_config.as_ref();
        if vpc.is_some() && self.settings.instance.is_none() {
            return self.finish_compilation(
                &key,
                CompilationStatus::Failed,
                Some("ClientError: Cove's data plane is off (it needs root, ip and nft), so a job with a VpcConfig cannot get its network interface.".into()),
            );
        }
        if j.session_access_key.is_none() {
            let role = j.request.role_arn.as_str();
            let s = assume_job_role(&self.sts, &j.account_id, role)?;
            self.update_compilation(&key, |j| j.session_access_key = Some(s))?;
        }
        if let (Some(config), None) = (vpc, &j.eni_id) {
            let subnet = config.subnets.first().cloned().unwrap_or_default();
            let groups = config.security_group_ids.clone();
            let made = self.store.write_as(&j.account_id, |tx| {
                let mut j = tx.cloned::<CompilationJob>(&key)?;
                let description = format!(
                    "[DO NOT DELETE] ENI managed by SageMaker for Compilation Job {}",
                    j.name
                );
                let eni =
                    cove_ec2::create_managed_eni(tx, &subnet, groups, description, REQUESTER)?;
                j.eni_id = Some(eni.id);
                tx.put(j);
                Ok(())
            });
            if let Err(e) = made {
                return self.finish_compilation(
                    &key,
                    CompilationStatus::Failed,
                    Some(format!(
                        "ClientError: Cannot create a network interface in the job's subnet: {}",
                        e.message
                    )),
                );
            }
            self.wait_for_data_plane()?;
        }
        self.update_compilation(&key, |j| {
            let now = now_rfc3339();
            j.status = CompilationStatus::InProgress;
            j.start_time = Some(now.clone());
            j.last_modified_time = now;
            j.phase = CompilationPhase::Compiling;
        })
    }

    /// Moves one file between S3 and `path` through the job's ENI.
    fn compilation_transfer(
        &self,
        j: &CompilationJob,
        uri: &str,
        path: &Path,
        upload: bool,
    ) -> Result<(), TransferError> {
        let (bucket, key) = parse_s3_uri(uri)
            .ok_or_else(|| TransferError::Local(format!("not an S3 URI: {uri}")))?;
        let path = path.to_path_buf();
        joined(spawn_in_network(
            &self.settings,
            &j.region,
            eni_netns(&self.settings, j.eni_id.as_deref()),
            session_of(&self.store, j.session_access_key.as_deref()).as_ref(),
            move |c| match upload {
                true => c.put_file(&bucket, &key, &path).map(|_| ()),
                false => c.get_to_file(&bucket, &key, &path).map(|_| ()),
            },
        ))
    }

    fn compilation_run(&self, j: &CompilationJob) -> anyhow::Result<()> {
        let key = j.key();
        let dir = self.compilation_dir(j);
        if dir.exists() {
            // A restart mid-compilation starts the work over.
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;

        let source = j
            .request
            .input_config
            .as_ref()
            .map(|i| i.s3_uri.as_str())
            .unwrap_or_default();
        let fetched = self.compilation_transfer(j, source, &dir.join("model.tar.gz"), false);
        if crate::workers::stop_requested::<CompilationJob>(&self.store, &key) {
            return self.finish_compilation(&key, CompilationStatus::Stopped, None);
        }
        if let Err(e) = fetched {
            return self.finish_compilation(
                &key,
                CompilationStatus::Failed,
                Some(transfer_failure(e, DATA_DOWNLOAD_FAILED)),
            );
        }
        std::fs::write(dir.join("request.json"), serde_json::to_string(&j.request)?)?;
        let outcome = self.run_compiler(j, &dir)?;
        LogShipper::new(&dir, || j.name.clone()).ship(
            self.logs.as_ref(),
            &j.region,
            &j.account_id,
            LOG_GROUP,
        );
        let result = match outcome {
            Ended::Stopped => {
                return self.finish_compilation(&key, CompilationStatus::Stopped, None)
            }
            Ended::Failed(reason) => {
                return self.finish_compilation(&key, CompilationStatus::Failed, Some(reason))
            }
            Ended::Done(result) => result,
        };
        let artifact = artifact_uri(&j.request);
        let compiled = dir.join("compiled.tar.gz");
        if let Err(e) = self.compilation_transfer(j, &artifact, &compiled, true) {
            return self.finish_compilation(
                &key,
                CompilationStatus::Failed,
                Some(transfer_failure(e, ARTIFACT_UPLOAD_FAILED)),
            );
        }
        let digest = cove_neo::file_digest(&compiled)?;
        let derived = j
            .request
            .input_config
            .as_ref()
            .is_none_or(|i| i.data_input_config.is_none())
            .then(|| result["DataInputConfig"].as_str().map(str::to_string))
            .flatten();
        self.update_compilation(&key, |j| {
            j.model_artifacts = Some(artifact);
            j.artifact_digest = Some(digest);
            j.derived_data_input_config = derived;
            j.finish(CompilationStatus::Completed, None, &now_rfc3339());
        })
    }

    /// Runs `cove compile-model` on the job's directory until it ends, is
    /// stopped, or runs out of time.
    fn run_compiler(&self, j: &CompilationJob, dir: &Path) -> anyhow::Result<Ended<Value>> {
        let log = std::fs::File::create(dir.join("container.log"))?;
        let mut command = std::process::Command::new(&self.settings.runner);
        command
            .arg("compile-model")
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.settings.instance.is_some() {
            cove_sys::unshare_before_exec(&mut command, cove_sys::UnshareFlags::NEWNET);
        }
        let mut child = command.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(max_runtime(&j.request));
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            let stopped = crate::workers::stop_requested::<CompilationJob>(&self.store, &j.key());
            if stopped || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(match stopped {
                    true => Ended::Stopped,
                    false => Ended::Failed(format!(
                        "ClientError: Compilation did not finish within MaxRuntimeInSeconds ({} s).",
                        max_runtime(&j.request)
                    )),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let result: Option<Value> = std::fs::read(dir.join("result.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        Ok(match result {
            Some(r) if status.success() && r["Error"].is_null() => Ended::Done(r),
            Some(r) => Ended::Failed(r["Error"].as_str().unwrap_or_default().to_string()),
            None => Ended::Failed(format!(
                "InternalServerError: The compiler ended ({status}) without a result."
            )),
        })
    }

    fn compilation_cleanup(&self, j: &CompilationJob) -> anyhow::Result<()> {
        self.store.write(|tx| {
            let Some(mut j) = tx
                .world
                .compilation_jobs
                .get(&j.key())
                .map(|x| (**x).clone())
            else {
                return Ok(());
            };
            release(
                tx,
                j.eni_id.take().as_deref(),
                j.session_access_key.take().as_deref(),
            );
            j.phase = CompilationPhase::CleanedUp;
            tx.put(j);
            Ok(())
        })?;
        let dir = self.compilation_dir(j);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }
}

/// `cove compile-model <dir>`: compiles `<dir>/model.tar.gz` for the
/// request in `<dir>/request.json` into `<dir>/compiled.tar.gz` and writes
/// `<dir>/result.json` (`{"DataInputConfig", "Metadata"}` or `{"Error"}`).
pub fn compile_model_main(dir: &Path) -> anyhow::Result<()> {
    let request: CreateCompilationJobRequest =
        serde_json::from_slice(&std::fs::read(dir.join("request.json"))?)?;
    let target = Target::from_output_config(&request.output_config)
        .ok_or_else(|| anyhow::anyhow!("the request names no single target"))?;
    let job = neo_job(&request, &target);
    println!(
        "Compiling {} ({}) for {}",
        request
            .input_config
            .as_ref()
            .map(|i| i.s3_uri.as_str())
            .unwrap_or_default(),
        job.framework,
        target.suffix()
    );
    let result = match cove_neo::compile(
        &dir.join("model.tar.gz"),
        &dir.join("work"),
        &dir.join("compiled.tar.gz"),
        &job,
    ) {
        Ok(c) => {
            println!("Input shapes: {}", c.data_input_config);
            println!(
                "Graph: {} nodes in the source, {} compiled; outputs checked (largest difference {})",
                c.metadata["Nodes"]["Source"],
                c.metadata["Nodes"]["Compiled"],
                c.metadata["Verification"]["MaxAbsDifference"]
            );
            json!({"DataInputConfig": c.data_input_config, "Metadata": c.metadata})
        }
        Err(reason) => {
            println!("{reason}");
            json!({ "Error": reason })
        }
    };
    std::fs::write(dir.join("result.json"), result.to_string())?;
    Ok(())
}
