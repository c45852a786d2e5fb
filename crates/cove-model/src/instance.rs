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

#[cfg(test)]
mod tests {
    use super::*;

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
