// A CDK app of a private network for SageMaker jobs, as a platform team
// writes one: isolated subnets in two zones and an S3 gateway endpoint.
// The legacy synthesizer needs no bootstrap stack (docs/cloudformation.md).
const cdk = require('aws-cdk-lib');
const ec2 = require('aws-cdk-lib/aws-ec2');

const app = new cdk.App();
const stack = new cdk.Stack(app, process.env.COVE_CDK_STACK || 'CoveCdkNetwork', {
  synthesizer: new cdk.LegacyStackSynthesizer(),
});
const vpc = new ec2.Vpc(stack, 'Vpc', {
  ipAddresses: ec2.IpAddresses.cidr(process.env.COVE_CDK_CIDR || '10.80.0.0/16'),
  maxAzs: 2,
  natGateways: 0,
  // The default group's rules are left as EC2 makes them (the restricting
  // custom resource needs Lambda).
  restrictDefaultSecurityGroup: false,
  subnetConfiguration: [{ name: 'private', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 }],
  gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
});
new cdk.CfnOutput(stack, 'VpcId', { value: vpc.vpcId });
new cdk.CfnOutput(stack, 'SubnetIds', { value: vpc.isolatedSubnets.map((s) => s.subnetId).join(',') });
new cdk.CfnOutput(stack, 'DefaultGroup', { value: vpc.vpcDefaultSecurityGroup });
app.synth();
