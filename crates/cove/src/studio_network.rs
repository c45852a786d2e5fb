//! Cove's managed network for `PublicInternetOnly` Studio apps, wired into
//! the drivers as their [`cove_jobs::PublicAppNetwork`]: AWS runs such apps
//! in a service VPC with internet access; Cove's is a real VPC in the
//! customer's region made through EC2 (tagged
//! `cove:managed=sagemaker-studio`), so every rule of the data plane
//! applies to it too. SageMaker's choices live here, EC2's mechanics in
//! `cove_ec2::ensure_service_network`.

use cove_ec2::ServiceNetwork;
use cove_model::cidr::Cidr;
use cove_model::AwsResult;
use cove_store::Tx;

const OWNER: &str = "sagemaker-studio";

const SPEC: ServiceNetwork<'static> = ServiceNetwork {
    owner: OWNER,
    vpc_cidr: Cidr::from_octets([10, 255, 0, 0], 16),
    subnet_cidr: Cidr::from_octets([10, 255, 0, 0], 20),
    group_name: "sagemaker-studio-apps",
    group_description: "Studio apps in Cove's managed network: all traffic out, nothing in",
    display_name: "SageMaker Studio (Cove-managed)",
};

pub struct StudioNetwork;

impl cove_jobs::PublicAppNetwork for StudioNetwork {
    fn subnet_and_group(
        &self,
        tx: &mut Tx,
        region: &str,
        account: &str,
    ) -> AwsResult<(String, String)> {
        cove_ec2::ensure_service_network(tx, region, account, &SPEC)
    }

    fn give_public_address(&self, tx: &mut Tx, eni_id: &str) -> AwsResult<()> {
        cove_ec2::give_public_address(tx, eni_id, OWNER)
    }
}
