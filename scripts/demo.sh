#!/usr/bin/env bash
# The main job, end to end: builds Cove, starts it with its embedded defaults
# and, with the AWS CLI only, builds a private ML network — a VPC with two
# private subnets (no route to the internet), a security group, an S3 gateway
# endpoint and a flow log — then runs a SageMaker training job in it (script
# mode in Cove's scikit-learn image: scripts/demo/train.py, built first by
# scripts/framework-images.sh). The job's ENI sits in a private subnet, its
# data comes from S3 through the endpoint, its model goes back the same way.
# Shows the status transitions and log lines as they happen and the artifact;
# then deploys the model to an endpoint in the same private subnets (its
# instance fetches the model through the S3 endpoint; scripts/demo/inference.py
# serves it), calls InvokeEndpoint, deletes the endpoint, and shows the
# flow-log records of the ENIs. Needs root for the data plane.
set -euo pipefail
cd "$(dirname "$0")/.."
# The data plane needs nftables (links and routes go over netlink); the
# script needs curl and Python's venv. Installed on Debian when missing.
need_apt=()
command -v nft >/dev/null || need_apt+=(nftables)
command -v curl >/dev/null || need_apt+=(curl)
# Jobs' ML storage volumes: ext4 in a loop-mounted file (util-linux, e2fsprogs).
command -v mkfs.ext4 >/dev/null || need_apt+=(e2fsprogs)
command -v losetup >/dev/null || need_apt+=(mount)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
# pip for the host's Python: script mode installs requirements.txt with it.
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
VENV=${COVE_VENV:-.venv}
if ! command -v aws >/dev/null && [ ! -x "$VENV/bin/aws" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check awscli
fi
export PATH="$PWD/$VENV/bin:$PATH"

cargo build --release -p cove
DATA=${COVE_DATA_DIR:-$(mktemp -d /tmp/cove-demo.XXXXXX)}
PORT=${COVE_PORT:-4747}
# Flow-log records every 2 s instead of each minute, so the demo can show them.
./target/release/cove serve --data-dir "$DATA" --listen "127.0.0.1:$PORT" --flow-log-window 2 > "$DATA/cove.log" 2>&1 &
COVE_PID=$!
# On exit: stop Cove and remove the kernel objects it made (the data directory stays).
trap 'kill $COVE_PID 2>/dev/null || true; wait $COVE_PID 2>/dev/null; ./target/release/cove teardown --data-dir "$DATA" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/_cove/health" >/dev/null && break; sleep 0.1; done
# The job and the endpoint run in Cove's scikit-learn image (numpy, pandas,
# scikit-learn from Debian's packages), pushed into Cove's registry under
# AWS's image URI. Built once (a few minutes), cached afterwards.
echo "== Cove's framework images into its registry (scripts/framework-images.sh):"
COVE_BIN=./target/release/cove bash scripts/framework-images.sh --data-dir "$DATA"

export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY AWS_DEFAULT_REGION=us-east-1
aws_() { aws --endpoint-url "http://127.0.0.1:$PORT" --output text "$@"; }

echo "== caller: $(aws_ sts get-caller-identity --query Arn)"
VPC=$(aws_ ec2 create-vpc --cidr-block 10.0.0.0/16 --query Vpc.VpcId)
aws_ ec2 modify-vpc-attribute --vpc-id "$VPC" --enable-dns-hostnames '{"Value":true}'
SUBNET_A=$(aws_ ec2 create-subnet --vpc-id "$VPC" --cidr-block 10.0.1.0/24 --availability-zone us-east-1a --query Subnet.SubnetId)
SUBNET_B=$(aws_ ec2 create-subnet --vpc-id "$VPC" --cidr-block 10.0.2.0/24 --availability-zone us-east-1b --query Subnet.SubnetId)
RTB=$(aws_ ec2 create-route-table --vpc-id "$VPC" --query RouteTable.RouteTableId)
for s in "$SUBNET_A" "$SUBNET_B"; do aws_ ec2 associate-route-table --route-table-id "$RTB" --subnet-id "$s" >/dev/null; done
SG=$(aws_ ec2 create-security-group --group-name training --description "training jobs" --vpc-id "$VPC" --query GroupId)
aws_ ec2 authorize-security-group-ingress --group-id "$SG" --ip-permissions "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$SG}]" >/dev/null
VPCE=$(aws_ ec2 create-vpc-endpoint --vpc-id "$VPC" --service-name com.amazonaws.us-east-1.s3 --route-table-ids "$RTB" --query VpcEndpoint.VpcEndpointId)
aws_ ec2 create-flow-logs --resource-type VPC --resource-ids "$VPC" --traffic-type ALL --log-group-name /cove/demo/flows \
    --deliver-logs-permission-arn arn:aws:iam::123456789012:role/flow-logs >/dev/null
echo "== private network: vpc=$VPC subnets=$SUBNET_A,$SUBNET_B sg=$SG s3-endpoint=$VPCE"
echo "== routes of the private subnets (no internet gateway, no NAT):"
aws_ ec2 describe-route-tables --route-table-ids "$RTB" --query 'RouteTables[0].Routes[].[DestinationCidrBlock||DestinationPrefixListId,GatewayId,State]'

BUCKET=demo-ml-$(date +%s)
aws_ s3 mb "s3://$BUCKET" >/dev/null
python3 -c 'import random
random.seed(7)
for part in range(4):
    with open(f"/tmp/cove-demo-part-{part}.csv", "w") as f:
        for _ in range(250):
            x = random.uniform(-2, 2); f.write(f"{x:.4f},{3*x + 2 + random.gauss(0, 0.1):.4f}\n")'
for part in 0 1 2 3; do aws_ s3 cp --quiet "/tmp/cove-demo-part-$part.csv" "s3://$BUCKET/data/train/part-$part.csv"; done
tar -czf /tmp/cove-demo-sourcedir.tar.gz -C scripts/demo train.py
aws_ s3 cp --quiet /tmp/cove-demo-sourcedir.tar.gz "s3://$BUCKET/code/sourcedir.tar.gz"
echo "== s3://$BUCKET: $(aws_ s3 ls --recursive "s3://$BUCKET" | wc -l) objects (4 CSV parts and the script-mode source)"

JOB=demo-linear-$(date +%s)
# The request as the SageMaker Python SDK sends it for an estimator in script mode.
JOB="$JOB" BUCKET="$BUCKET" SUBNETS="$SUBNET_A,$SUBNET_B" SG="$SG" python3 -c 'import json, os
e = os.environ
b = e["BUCKET"]
print(json.dumps({
    "TrainingJobName": e["JOB"],
    "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
    "AlgorithmSpecification": {"TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
                               "TrainingInputMode": "File"},
    "HyperParameters": {"sagemaker_program": json.dumps("train.py"),
                        "sagemaker_submit_directory": json.dumps(f"s3://{b}/code/sourcedir.tar.gz"),
                        "fit-intercept": "true"},
    "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://{b}/data/train"}}}],
    "OutputDataConfig": {"S3OutputPath": f"s3://{b}/output"},
    "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
    "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    "VpcConfig": {"Subnets": e["SUBNETS"].split(","), "SecurityGroupIds": [e["SG"]]},
}))' > "$DATA/training-job.json"
echo "== before it runs: what the job's subnets and security group allow (cove reach-job):"
./target/release/cove reach-job --data-dir "$DATA" --request "$DATA/training-job.json"
aws_ sagemaker create-training-job --cli-input-json "file://$DATA/training-job.json" >/dev/null
echo "== training job $JOB in $SUBNET_A/$SUBNET_B:"
./target/release/cove watch-job "$JOB" --endpoint "http://127.0.0.1:$PORT"
echo "== the model, from the artifact the job uploaded through the endpoint:"
aws_ s3 cp "s3://$BUCKET/output/$JOB/output/model.tar.gz" - | tar -xzO model.json; echo

tar -czf /tmp/cove-demo-serve.tar.gz -C scripts/demo inference.py
aws_ s3 cp --quiet /tmp/cove-demo-serve.tar.gz "s3://$BUCKET/code/serve.tar.gz"
aws_ sagemaker create-model --model-name "$JOB" --execution-role-arn arn:aws:iam::123456789012:role/SageMakerRole \
    --primary-container "Image=683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3,ModelDataUrl=s3://$BUCKET/output/$JOB/output/model.tar.gz,Environment={SAGEMAKER_PROGRAM=inference.py,SAGEMAKER_SUBMIT_DIRECTORY=s3://$BUCKET/code/serve.tar.gz}" \
    --vpc-config "Subnets=$SUBNET_A,$SUBNET_B,SecurityGroupIds=$SG" >/dev/null
aws_ sagemaker create-endpoint-config --endpoint-config-name "$JOB" \
    --production-variants "VariantName=AllTraffic,ModelName=$JOB,InstanceType=ml.m5.large,InitialInstanceCount=1" >/dev/null
aws_ sagemaker create-endpoint --endpoint-name "$JOB" --endpoint-config-name "$JOB" >/dev/null
echo "== endpoint $JOB in the same private subnets:"
STATUS=Creating
while [ "$STATUS" = Creating ]; do sleep 0.2; STATUS=$(aws_ sagemaker describe-endpoint --endpoint-name "$JOB" --query EndpointStatus); done
echo "   $STATUS $(aws_ sagemaker describe-endpoint --endpoint-name "$JOB" --query FailureReason | grep -v None || true)"
echo "== InvokeEndpoint {\"x\": [0, 1, 2]} (the data was y = 3x + 2 plus noise):"
aws_ sagemaker-runtime invoke-endpoint --endpoint-name "$JOB" --content-type application/json \
    --body '{"x": [0, 1, 2]}' "$DATA/prediction.json" >/dev/null
echo "   $(cat "$DATA/prediction.json")"
aws_ sagemaker delete-endpoint --endpoint-name "$JOB"
sleep 3
echo "== flow-log records of the job's and the endpoint's ENIs (version 2: ... srcaddr dstaddr srcport dstport protocol packets bytes start end action status):"
aws_ logs filter-log-events --log-group-name /cove/demo/flows --query 'events[].message' | tr '\t' '\n' | head -12
echo "== data kept in $DATA; server log in $DATA/cove.log"
echo "== to see the VPC, the job and its flow log in the console: ./target/release/cove serve --data-dir $DATA"
echo "   then open http://127.0.0.1:$PORT/ and sign in with $AWS_ACCESS_KEY_ID and its secret, $AWS_SECRET_ACCESS_KEY"
