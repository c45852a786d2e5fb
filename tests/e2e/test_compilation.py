"""SageMaker Neo compilation jobs: the model archive comes from S3 through
the job's ENI in a private subnet, Cove's compiler really compiles it (an
ONNX graph built here with the onnx package, checked and written as tract
NNEF), and the compiled archive goes back through the same ENI. Real boto3
against a real Cove."""

import hashlib
import io
import json
import tarfile
import time
import uuid

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from helpers import aws_error, eventually, wait_status
from test_training_jobs import ROLE, s3_endpoint, private_net, bucket, s3, sm, logs  # noqa: F401
from test_training_jobs import DATA_DOWNLOAD_FAILED

FINISHED = ("COMPLETED", "FAILED", "STOPPED")


def onnx_linear(batch="N"):
    """y = relu(x @ W + b), x: [batch, 4] -> y: [batch, 3], as ONNX bytes."""
    weights = numpy_helper.from_array((np.arange(12, dtype=np.float32).reshape(4, 3) / 10) - 0.5, "W")
    bias = numpy_helper.from_array(np.array([0.5, -1.0, 0.25], dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]),
         helper.make_node("Add", ["h", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [weights, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def model_archive(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def compilation_request(name, bucket, key="neo/model.tar.gz", net=None, framework="ONNX",
                        target={"TargetDevice": "ml_c5"}, shapes='{"x": [2, 4]}'):
    req = {
        "CompilationJobName": name,
        "RoleArn": ROLE,
        "InputConfig": {"S3Uri": f"s3://{bucket}/{key}", "Framework": framework, "FrameworkVersion": "1.13"},
        "OutputConfig": {"S3OutputLocation": f"s3://{bucket}/neo/compiled", **target},
        "StoppingCondition": {"MaxRuntimeInSeconds": 300},
    }
    if shapes:
        req["InputConfig"]["DataInputConfig"] = shapes
    if net:
        req["VpcConfig"] = {"Subnets": net["subnets"], "SecurityGroupIds": [net["sg"]]}
    return req


def wait_compiled(sm, name, timeout=60):
    return wait_status(lambda: sm.describe_compilation_job(CompilationJobName=name),
                       "CompilationJobStatus", FINISHED, timeout, f"compilation job {name}")


def job_name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_compilation_in_a_private_subnet_reads_and_writes_through_the_endpoint(ec2, s3, sm, logs, bucket, private_net):
    source = onnx_linear()
    s3.put_object(Bucket=bucket, Key="neo/model.tar.gz", Body=model_archive({"model.onnx": source}))
    endpoint = s3_endpoint(ec2, private_net)
    # Only requests through the endpoint may read the model.
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/neo/*",
        "Condition": {"StringNotEquals": {"aws:sourceVpce": endpoint}}}]}))
    try:
        name = job_name("neo")
        arn = sm.create_compilation_job(**compilation_request(name, bucket, net=private_net))["CompilationJobArn"]
        assert arn == f"arn:aws:sagemaker:us-east-1:123456789012:compilation-job/{name}"
        d = wait_compiled(sm, name)
        assert d["CompilationJobStatus"] == "COMPLETED", d["FailureReason"]
    finally:
        s3.delete_bucket_policy(Bucket=bucket)
    artifact = f"s3://{bucket}/neo/compiled/model-ml_c5.tar.gz"
    assert d["ModelArtifacts"]["S3ModelArtifacts"] == artifact
    assert d["VpcConfig"] == {"Subnets": private_net["subnets"], "SecurityGroupIds": [private_net["sg"]]}
    assert d["CompilationStartTime"] <= d["CompilationEndTime"]
    assert "DerivedInformation" not in d  # the request gave the shapes

    body = s3.get_object(Bucket=bucket, Key="neo/compiled/model-ml_c5.tar.gz")["Body"].read()
    assert d["ModelDigests"]["ArtifactDigest"] == hashlib.sha256(body).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert sorted(tar.getnames()) == ["compiled_model.json", "model.nnef.tar"]
        meta = json.load(tar.extractfile("compiled_model.json"))
        nnef = tarfile.open(fileobj=io.BytesIO(tar.extractfile("model.nnef.tar").read()))
    assert meta["SourceSha256"] == hashlib.sha256(source).hexdigest()
    assert meta["Target"] == "ml_c5"
    assert meta["Inputs"] == [{"Name": "x", "Shape": [2, 4], "DataType": "F32"}]
    assert meta["Outputs"][0]["Shape"] == ["2", "3"]
    assert meta["Verification"]["MaxAbsDifference"] <= 1e-6
    # The compiled graph is NNEF text, fixed to the requested shapes, with
    # relu lowered to max(z, 0); the weights are an NNEF tensor file (a
    # 128-byte header, then little-endian floats) holding the model's W.
    graph = nnef.extractfile("graph.nnef").read().decode()
    assert "x = external(shape = [2, 4]);" in graph, graph
    assert "matmul(x, W_0" in graph and "max(z," in graph, graph
    weights = nnef.extractfile("W.0.dat").read()
    expected = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10) - 0.5
    assert np.array_equal(np.frombuffer(weights[128:], dtype="<f4").reshape(4, 3), expected)

    # The job's ENI goes with its cleanup step, just after its final status;
    # its output is in CloudWatch Logs.
    assert eventually(lambda: not [
        e for e in ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [private_net["vpc"]]}])
        ["NetworkInterfaces"] if name in e.get("Description", "")])
    events = logs.get_log_events(logGroupName="/aws/sagemaker/CompilationJobs", logStreamName=name)["events"]
    text = "\n".join(e["message"] for e in events)
    assert "Compiling" in text and "outputs checked" in text, text


def test_compilation_without_an_s3_route_fails_fast_with_aws_message(s3, sm, bucket, private_net):
    s3.put_object(Bucket=bucket, Key="neo/model.tar.gz", Body=model_archive({"model.onnx": onnx_linear()}))
    name = job_name("neo-noroute")
    started = time.time()
    sm.create_compilation_job(**compilation_request(name, bucket, net=private_net))
    d = wait_compiled(sm, name)
    assert d["CompilationJobStatus"] == "FAILED"
    assert d["FailureReason"] == DATA_DOWNLOAD_FAILED
    assert time.time() - started < 30
    assert d["ModelArtifacts"]["S3ModelArtifacts"] == ""


def test_unsupported_inputs_fail_with_the_reason(s3, sm, bucket):
    s3.put_object(Bucket=bucket, Key="neo/model.tar.gz", Body=model_archive({"model.onnx": onnx_linear()}))
    s3.put_object(Bucket=bucket, Key="neo/empty.tar.gz", Body=model_archive({"README": b"no model"}))
    s3.put_object(Bucket=bucket, Key="neo/fixed.tar.gz", Body=model_archive({"m/model.onnx": onnx_linear(1)}))
    cases = {
        "pytorch": (dict(framework="PYTORCH"),
                    "ClientError: InputConfiguration: Framework PYTORCH is not supported by Cove's compiler. Supported: ONNX."),
        "gpu": (dict(target={"TargetDevice": "ml_p3"}),
                "ClientError: OutputConfiguration: TargetDevice ml_p3 is not supported."),
        "empty": (dict(key="neo/empty.tar.gz"),
                  "ClientError: InputConfiguration: No .onnx file found in the model archive."),
        "badshape": (dict(shapes='{"input0": [1, 4]}'),
                     "ClientError: InputConfiguration: DataInputConfig names the input input0, which the model does not have; its inputs are x."),
        "open": (dict(shapes=None),
                 "ClientError: InputConfiguration: DataInputConfig is required: input x"),
    }
    names = {case: job_name(f"neo-{case}") for case in cases}
    for case, (kw, _) in cases.items():
        sm.create_compilation_job(**compilation_request(names[case], bucket, **kw))
    # Fixed shapes need no DataInputConfig, and Describe reports them; a platform target names the artifact.
    fixed = job_name("neo-fixed")
    sm.create_compilation_job(**compilation_request(
        fixed, bucket, key="neo/fixed.tar.gz", shapes=None,
        target={"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}}))
    for case, (_, reason) in cases.items():
        d = wait_compiled(sm, names[case])
        assert d["CompilationJobStatus"] == "FAILED", case
        assert d["FailureReason"].startswith(reason), (case, d["FailureReason"])
    d = wait_compiled(sm, fixed)
    assert d["CompilationJobStatus"] == "COMPLETED", d["FailureReason"]
    assert d["DerivedInformation"] == {"DerivedDataInputConfig": '{"x":[1,4]}'}
    assert d["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{bucket}/neo/compiled/fixed-LINUX_X86_64.tar.gz"


def test_create_validates_and_list_and_stop_behave_as_aws(sm, s3, bucket, private_net):
    both = compilation_request(job_name("neo-both"), bucket,
                               target={"TargetDevice": "ml_c5", "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}})
    assert "Exactly one of TargetDevice and TargetPlatform" in aws_error(
        "ValidationException", sm.create_compilation_job, **both)
    bad_vpc = compilation_request(job_name("neo-vpc"), bucket,
                                  net={"subnets": ["subnet-0000000000000000a"], "sg": private_net["sg"]})
    assert "do not exist" in aws_error("ValidationException", sm.create_compilation_job, **bad_vpc)
    aws_error("ValidationException", sm.create_compilation_job,
              **{**compilation_request(job_name("neo-enum"), bucket), "OutputConfig": {
                  "S3OutputLocation": f"s3://{bucket}/x", "TargetDevice": "ml_nonexistent"}})
    msg = aws_error("ResourceNotFound", sm.describe_compilation_job, CompilationJobName="no-such-job")
    assert msg == "Compilation job no-such-job does not exist."

    # A job whose download cannot connect (no S3 route) is stopped while it waits.
    name = job_name("neo-stop")
    sm.create_compilation_job(**compilation_request(name, bucket, net=private_net))
    sm.stop_compilation_job(CompilationJobName=name)
    assert sm.describe_compilation_job(CompilationJobName=name)["CompilationJobStatus"] in ("STOPPING", "STOPPED")
    d = wait_compiled(sm, name)
    assert d["CompilationJobStatus"] == "STOPPED"
    assert "already exists" in aws_error(
        "ResourceInUse", sm.create_compilation_job, **compilation_request(name, bucket))
    assert "status STOPPED" in aws_error("ValidationException", sm.stop_compilation_job, CompilationJobName=name)

    listed = sm.list_compilation_jobs(NameContains=name)["CompilationJobSummaries"]
    assert [(j["CompilationJobName"], j["CompilationJobStatus"], j["CompilationTargetDevice"]) for j in listed] == [
        (name, "STOPPED", "ml_c5")]
    stopped = sm.list_compilation_jobs(StatusEquals="STOPPED", SortBy="Name", SortOrder="Ascending", MaxResults=100)
    assert name in [j["CompilationJobName"] for j in stopped["CompilationJobSummaries"]]
    assert all(j["CompilationJobStatus"] == "STOPPED" for j in stopped["CompilationJobSummaries"])
