"""Runs under SageMaker Python SDK v3 (its own venv): trains with
`ModelTrainer` exactly as the v3 docs show, against the Cove named by
AWS_ENDPOINT_URL, and prints the finished job's description as JSON.

argv: ROLE BUCKET IMAGE SOURCE_DIR SUBNETS(comma) SECURITY_GROUP"""

import json
import sys

import boto3
from sagemaker.core.helper.session_helper import Session
from sagemaker.train import ModelTrainer
from sagemaker.train.configs import Compute, InputData, Networking, SourceCode

role, bucket, image, source_dir, subnets, sg = sys.argv[1:7]
session = Session(boto_session=boto3.Session(), default_bucket=bucket)
trainer = ModelTrainer(
    training_image=image,
    source_code=SourceCode(source_dir=source_dir, entry_script="train.py"),
    compute=Compute(instance_type="ml.m5.large", instance_count=1),
    networking=Networking(subnets=subnets.split(","), security_group_ids=[sg]),
    hyperparameters={"alpha": 0.5},
    role=role,
    sagemaker_session=session,
    base_job_name="sdk3",
)
trainer.train(
    input_data_config=[InputData(channel_name="train", data_source=f"s3://{bucket}/train")],
    wait=True,
    logs=True,
)
job = session.sagemaker_client.describe_training_job(TrainingJobName=trainer._latest_training_job.training_job_name)
print("RESULT " + json.dumps(job, default=str))
