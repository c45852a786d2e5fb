//! What an ML instance type gives a container: vCPUs and memory, as AWS
//! lists them, so the cgroup limits match what the job would get on AWS.

/// vCPUs and memory (GiB) of an `ml.*` instance type, derived from its
/// family's memory per vCPU and its size; `None` for types Cove cannot size.
pub fn resources(instance_type: &str) -> Option<(f64, f64)> {
    let rest = instance_type.strip_prefix("ml.")?;
    let (family, size) = rest.split_once('.')?;
    let vcpus: f64 = match size {
        "medium" => 2.0,
        "large" => 2.0,
        "xlarge" => 4.0,
        s => s.strip_suffix("xlarge")?.parse::<f64>().ok()? * 4.0,
    };
    // Memory per vCPU by family letter, as on AWS's instance pages.
    let gib_per_vcpu = match family.chars().next()? {
        'c' => 2.0,
        'm' | 'g' => 4.0,
        'r' | 'x' => 8.0,
        't' => {
            if size == "medium" {
                2.0
            } else {
                4.0
            }
        }
        'p' => 7.6,
        'i' | 'd' => 8.0,
        _ => return None,
    };
    Some((vcpus, vcpus * gib_per_vcpu))
}

/// How many GPUs an `ml.*` instance type has on AWS (0 for CPU types and
/// types Cove does not know).
pub fn gpus(instance_type: &str) -> u32 {
    let Some((family, size)) = instance_type
        .strip_prefix("ml.")
        .and_then(|r| r.split_once('.'))
    else {
        return 0;
    };
    match (family, size) {
        ("p3", "2xlarge") => 1,
        ("p3", "8xlarge") => 4,
        ("p3", "16xlarge") | ("p3dn", "24xlarge") => 8,
        ("p4d" | "p4de" | "p5" | "p5e" | "p5en", _) => 8,
        ("g4dn" | "g5" | "g6" | "g6e", "12xlarge" | "24xlarge") => 4,
        ("g4dn" | "g5" | "g6" | "g6e", "48xlarge" | "metal") => 8,
        ("g4dn" | "g5" | "g6" | "g6e", _) => 1,
        _ => 0,
    }
}

/// Whether this host has an NVIDIA GPU a container could be given.
pub fn host_has_gpus() -> bool {
    std::path::Path::new("/dev/nvidia0").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_counts() {
        assert_eq!(gpus("ml.m5.large"), 0);
        assert_eq!(gpus("ml.g5.xlarge"), 1);
        assert_eq!(gpus("ml.g5.12xlarge"), 4);
        assert_eq!(gpus("ml.p4d.24xlarge"), 8);
        assert_eq!(gpus("ml.p3.8xlarge"), 4);
        assert_eq!(gpus("nonsense"), 0);
    }

    #[test]
    fn sizes_follow_aws_instance_pages() {
        assert_eq!(resources("ml.m5.large"), Some((2.0, 8.0)));
        assert_eq!(resources("ml.m5.xlarge"), Some((4.0, 16.0)));
        assert_eq!(resources("ml.c5.2xlarge"), Some((8.0, 16.0)));
        assert_eq!(resources("ml.r5.4xlarge"), Some((16.0, 128.0)));
        assert_eq!(resources("ml.t3.medium"), Some((2.0, 4.0)));
        assert_eq!(resources("m5.large"), None);
        assert_eq!(resources("ml.m5.hugexlarge"), None);
    }
}
