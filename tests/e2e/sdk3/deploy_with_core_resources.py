"""Runs under SageMaker Python SDK v3 (its own venv): deploys a model with
v3's resource classes (`sagemaker.core.resources`: Model, EndpointConfig,
Endpoint) against the Cove named by AWS_ENDPOINT_URL, invokes it, deletes
it, and prints the answer as JSON.

argv: ROLE IMAGE MODEL_DATA_URL SUBNETS(comma) SECURITY_GROUP NAME"""

import json
import sys

from sagemaker.core.resources import Endpoint, EndpointConfig, Model
from sagemaker.core.shapes import ContainerDefinition, ProductionVariant, VpcConfig

role, image, model_data, subnets, sg, name = sys.argv[1:7]
model = Model.create(
    model_name=name,
    execution_role_arn=role,
    primary_container=ContainerDefinition(
        image=image,
        model_data_url=model_data,
        environment={"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"},
    ),
    vpc_config=VpcConfig(subnets=subnets.split(","), security_group_ids=[sg]),
)
config = EndpointConfig.create(
    endpoint_config_name=name,
    production_variants=[ProductionVariant(variant_name="AllTraffic", model_name=name,
                                           instance_type="ml.m5.large", initial_instance_count=1)],
)
endpoint = Endpoint.create(endpoint_name=name, endpoint_config_name=name)
endpoint.wait_for_status("InService", poll=1, timeout=120)
answer = endpoint.invoke(body=json.dumps({"inputs": [1, 2]}), content_type="application/json")
body = json.loads(answer.body.read())
endpoint.refresh()
status = endpoint.endpoint_status
endpoint.delete()
config.delete()
model.delete()
print("RESULT " + json.dumps({"status": status, "body": body}))
