#!/usr/bin/env bash
# Builds Cove, starts it with its embedded defaults and builds a private ML
# network with the AWS CLI: a VPC, a private subnet with no route to the
# internet, a security group, and an S3 gateway endpoint on the subnet's
# route table, then shows with real packets (as root) that a process attached
# to an ENI in that subnet resolves S3's name through the VPC resolver and
# reaches S3 only through the endpoint, and prints the ENI's flow-log records.
# (Running a SageMaker training job in it arrives with the training-job work;
# see README.)
set -euo pipefail
cd "$(dirname "$0")/.."

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

export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY AWS_DEFAULT_REGION=us-east-1
aws_() { aws --endpoint-url "http://127.0.0.1:$PORT" --output text "$@"; }

echo "== caller: $(aws_ sts get-caller-identity --query Arn)"
VPC=$(aws_ ec2 create-vpc --cidr-block 10.0.0.0/16 --query Vpc.VpcId)
aws_ ec2 modify-vpc-attribute --vpc-id "$VPC" --enable-dns-hostnames '{"Value":true}'
SUBNET=$(aws_ ec2 create-subnet --vpc-id "$VPC" --cidr-block 10.0.1.0/24 --availability-zone us-east-1a --query Subnet.SubnetId)
RTB=$(aws_ ec2 create-route-table --vpc-id "$VPC" --query RouteTable.RouteTableId)
aws_ ec2 associate-route-table --route-table-id "$RTB" --subnet-id "$SUBNET" >/dev/null
SG=$(aws_ ec2 create-security-group --group-name training --description "training jobs" --vpc-id "$VPC" --query GroupId)
aws_ ec2 authorize-security-group-ingress --group-id "$SG" --ip-permissions "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$SG}]" >/dev/null
VPCE=$(aws_ ec2 create-vpc-endpoint --vpc-id "$VPC" --service-name com.amazonaws.us-east-1.s3 --route-table-ids "$RTB" --query VpcEndpoint.VpcEndpointId)
aws_ ec2 create-flow-logs --resource-type VPC --resource-ids "$VPC" --traffic-type ALL --log-group-name /cove/demo/flows \
    --deliver-logs-permission-arn arn:aws:iam::123456789012:role/flow-logs >/dev/null
echo "== private network: vpc=$VPC subnet=$SUBNET sg=$SG route-table=$RTB s3-endpoint=$VPCE"
echo "== routes of the private subnet:"
aws_ ec2 describe-route-tables --route-table-ids "$RTB" --query 'RouteTables[0].Routes[].[DestinationCidrBlock||DestinationPrefixListId,GatewayId,State]'
if [ "$(id -u)" = 0 ]; then
    ENI=$(aws_ ec2 create-network-interface --subnet-id "$SUBNET" --groups "$SG" --query NetworkInterface.NetworkInterfaceId)
    PY=$(command -v python3)
    ./target/release/cove exec --data-dir "$DATA" --internet -- "$PY" -c 'import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(("192.0.2.20",443));s.listen(8);print("ready",flush=True)
while True:
 c,a=s.accept();c.sendall(a[0].encode());c.close()' > "$DATA/s3.out" &
    S3_PID=$!
    for _ in $(seq 50); do grep -q ready "$DATA/s3.out" 2>/dev/null && break; sleep 0.1; done
    probe='import socket;s=socket.socket();s.settimeout(1)
name="s3.us-east-1.amazonaws.com";addr=socket.gethostbyname(name)
try:
 s.connect((addr,443));print(name,"resolved to",addr,"by the VPC resolver; S3 saw source",s.recv(32).decode())
except OSError as e:
 print(name,"resolved to",addr,"but there is no route:",e)'
    sleep 0.5
    echo "== from $ENI with the S3 endpoint:"
    ./target/release/cove exec --data-dir "$DATA" --eni "$ENI" -- "$PY" -c "$probe"
    aws_ ec2 modify-vpc-endpoint --vpc-endpoint-id "$VPCE" --remove-route-table-ids "$RTB" >/dev/null
    sleep 0.5
    echo "== from $ENI after removing the endpoint from the route table:"
    ./target/release/cove exec --data-dir "$DATA" --eni "$ENI" -- "$PY" -c "$probe"
    kill $S3_PID 2>/dev/null || true
    sleep 3
    echo "== flow-log records of $ENI (version 2: ... srcaddr dstaddr srcport dstport protocol packets bytes start end action status):"
    aws_ logs filter-log-events --log-group-name /cove/demo/flows --log-stream-names "$ENI" --query 'events[].message' | tr '\t' '\n'
fi
echo "== data kept in $DATA (cove.db); server log in $DATA/cove.log"
