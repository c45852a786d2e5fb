//! SageMaker's own networks, wired into the drivers as their
//! [`cove_jobs::PublicAppNetwork`]: AWS runs `PublicInternetOnly` Studio
//! apps, and jobs and models without a `VpcConfig`, in service VPCs with
//! internet access;
//! Cove's are real VPCs in the customer's region made through EC2 (tagged
//! `cove:managed=sagemaker-studio`, `sagemaker-jobs` or `sagemaker-hosting`),
//! so every rule of the
//! data plane applies to them too. SageMaker's choices live here, EC2's
//! mechanics in `cove_ec2::ensure_service_network`.

use cove_ec2::ServiceNetwork;
use cove_jobs::ManagedNetwork;
use cove_model::cidr::Cidr;
use cove_model::AwsResult;
use cove_store::Tx;

const STUDIO: ServiceNetwork<'static> = ServiceNetwork {
    owner: "sagemaker-studio",
    vpc_cidr: Cidr::from_octets([10, 255, 0, 0], 16),
    subnet_cidr: Cidr::from_octets([10, 255, 0, 0], 20),
    group_name: "sagemaker-studio-apps",
    group_description: "Studio apps in Cove's managed network: all traffic out, nothing in",
    display_name: "SageMaker Studio (Cove-managed)",
    ingress_from_itself: false,
};

const JOBS: ServiceNetwork<'static> = ServiceNetwork {
    owner: "sagemaker-jobs",
    vpc_cidr: Cidr::from_octets([10, 254, 0, 0], 16),
    subnet_cidr: Cidr::from_octets([10, 254, 0, 0], 18),
    group_name: "sagemaker-jobs",
    group_description: "Jobs without a VpcConfig in Cove's managed network: all traffic out, in only from the same job's hosts",
    display_name: "SageMaker jobs (Cove-managed)",
    ingress_from_itself: true,
};

const HOSTING: ServiceNetwork<'static> = ServiceNetwork {
    owner: "sagemaker-hosting",
    vpc_cidr: Cidr::from_octets([10, 253, 0, 0], 16),
    subnet_cidr: Cidr::from_octets([10, 253, 0, 0], 18),
    group_name: "sagemaker-hosting",
    group_description:
        "Model instances without a VpcConfig in Cove's managed network: all traffic out, nothing in",
    display_name: "SageMaker hosting (Cove-managed)",
    ingress_from_itself: false,
};

fn spec(network: ManagedNetwork) -> &'static ServiceNetwork<'static> {
    match network {
        ManagedNetwork::Studio => &STUDIO,
        ManagedNetwork::Jobs => &JOBS,
        ManagedNetwork::Hosting => &HOSTING,
    }
}

pub struct ManagedNetworks;

impl cove_jobs::PublicAppNetwork for ManagedNetworks {
    fn subnet_and_group(
        &self,
        tx: &mut Tx,
        region: &str,
        account: &str,
        network: ManagedNetwork,
    ) -> AwsResult<(String, String)> {
        cove_ec2::ensure_service_network(tx, region, account, spec(network))
    }

    fn give_public_address(
        &self,
        tx: &mut Tx,
        eni_id: &str,
        network: ManagedNetwork,
    ) -> AwsResult<()> {
        cove_ec2::give_public_address(tx, eni_id, spec(network).owner)
    }
}
