//! The arithmetic of an inference recommender benchmark (pure): the
//! concurrency levels a `TrafficPattern` asks for, what a level's measured
//! latencies and counts amount to, the best level under the job's latency
//! thresholds, and the cost of an instance type.

use cove_sagemaker::requests::{RecommendationJobStoppingConditions, TrafficPattern};
use serde_json::Value;

/// A concurrency level: this many users calling back to back for this long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub users: usize,
    pub seconds: f64,
}

/// What one level measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    pub users: usize,
    pub seconds: f64,
    /// Latency of each successful invocation, in microseconds.
    pub latencies_us: Vec<u64>,
    pub errors: u64,
}

impl Measured {
    pub fn invocations_per_minute(&self) -> f64 {
        if self.seconds <= 0.0 {
            return 0.0;
        }
        self.latencies_us.len() as f64 * 60.0 / self.seconds
    }

    /// The `p`th percentile latency (0–100) in microseconds, nearest rank.
    pub fn percentile_us(&self, p: f64) -> Option<u64> {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        percentile(&sorted, p)
    }
}

pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    #[allow(clippy::cast_precision_loss)] // why: a sample count is far below 2^53.
    let rank = cove_model::convert::f64_to_usize(((p / 100.0) * sorted.len() as f64).ceil());
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The levels to run when the request gives no `TrafficPattern`: doubling
/// users, two seconds each.
pub const DEFAULT_LEVELS: [Level; 4] = [
    Level {
        users: 1,
        seconds: 2.0,
    },
    Level {
        users: 2,
        seconds: 2.0,
    },
    Level {
        users: 4,
        seconds: 2.0,
    },
    Level {
        users: 8,
        seconds: 2.0,
    },
];

/// At most this many users at once: the load generator shares the machine.
pub const MAX_USERS: usize = 64;

/// The levels of a `TrafficPattern`: `Stairs` (`NumberOfSteps` steps of
/// `UsersPerStep` more users each, sharing `DurationInSeconds`) or `Phases`
/// (each starting at `InitialNumberOfUsers` and adding `SpawnRate` users a
/// minute for its `DurationInSeconds`), cut off at `max_seconds`.
pub fn levels(pattern: Option<&TrafficPattern>, max_seconds: Option<f64>) -> Vec<Level> {
    let mut out = vec![];
    let stairs = pattern.and_then(|p| p.stairs.as_ref());
    let phases = pattern.and_then(|p| p.phases.as_ref());
    match (stairs, phases) {
        (Some(s), _) => {
            let steps =
                cove_model::convert::u64_to_usize(count(s.number_of_steps).unwrap_or(4).max(1));
            let per_step =
                cove_model::convert::u64_to_usize(count(s.users_per_step).unwrap_or(1).max(1));
            let total = seconds(s.duration_in_seconds).unwrap_or(8.0);
            for k in 1..=steps {
                out.push(Level {
                    users: k * per_step,
                    seconds: total / steps as f64,
                });
            }
        }
        (None, Some(phases)) => {
            for phase in phases {
                let initial = cove_model::convert::u64_to_usize(
                    count(phase.initial_number_of_users).unwrap_or(1).max(1),
                );
                let rate = count(phase.spawn_rate).unwrap_or(0) as f64;
                let duration = seconds(phase.duration_in_seconds).unwrap_or(4.0);
                // One level per user added: a new user every 60/rate seconds.
                let step = if rate > 0.0 { 60.0 / rate } else { duration };
                let mut elapsed = 0.0;
                let mut users = initial;
                while elapsed < duration {
                    let seconds = step.min(duration - elapsed);
                    out.push(Level { users, seconds });
                    elapsed += seconds;
                    users += 1;
                }
            }
        }
        _ => out.extend(DEFAULT_LEVELS),
    }
    for l in &mut out {
        l.users = l.users.min(MAX_USERS);
    }
    if let Some(max) = max_seconds {
        let mut left = max;
        out.retain_mut(|l| {
            if left <= 0.0 {
                return false;
            }
            l.seconds = l.seconds.min(left);
            left -= l.seconds;
            true
        });
    }
    out
}

/// A count the request gives, if it is one (a negative number is none, as
/// JSON's `as_u64` read it).
fn count(n: Option<i64>) -> Option<u64> {
    n.and_then(|n| u64::try_from(n).ok())
}

/// An integer member as a float, as JSON's `as_f64` read it.
#[allow(clippy::cast_precision_loss)] // why: seconds and milliseconds are far below 2^53.
fn seconds(n: Option<i64>) -> Option<f64> {
    n.map(|n| n as f64)
}

/// `StoppingConditions.ModelLatencyThresholds`: (percentile, milliseconds).
pub fn thresholds(stopping: Option<&RecommendationJobStoppingConditions>) -> Vec<(f64, f64)> {
    stopping
        .and_then(|s| s.model_latency_thresholds.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let p = t
                .percentile
                .as_deref()?
                .trim_start_matches(['P', 'p'])
                .parse()
                .ok()?;
            Some((p, seconds(t.value_in_milliseconds)?))
        })
        .collect()
}

/// Whether a level kept within every latency threshold and had no errors.
pub fn within(level: &Measured, thresholds: &[(f64, f64)]) -> bool {
    level.errors == 0
        && !level.latencies_us.is_empty()
        && thresholds.iter().all(|(p, ms)| {
            level
                .percentile_us(*p)
                .is_some_and(|us| us as f64 <= ms * 1000.0)
        })
}

/// The level a recommendation reports: the highest throughput among the
/// levels within the thresholds.
pub fn best<'m>(levels: &'m [Measured], thresholds: &[(f64, f64)]) -> Option<&'m Measured> {
    levels
        .iter()
        .filter(|l| within(l, thresholds))
        .max_by(|a, b| {
            a.invocations_per_minute()
                .total_cmp(&b.invocations_per_minute())
        })
}

/// On-demand price per hour in us-east-1 (USD) of the instance types Cove
/// knows, from AWS's SageMaker real-time inference price list; the cost
/// figures are estimates from these.
pub fn cost_per_hour(instance_type: &str) -> Option<f64> {
    Some(match instance_type {
        "ml.t2.medium" => 0.056,
        "ml.t2.large" => 0.111,
        "ml.m4.xlarge" => 0.24,
        "ml.m5.large" => 0.115,
        "ml.m5.xlarge" => 0.23,
        "ml.m5.2xlarge" => 0.461,
        "ml.m5.4xlarge" => 0.922,
        "ml.c4.large" => 0.14,
        "ml.c4.xlarge" => 0.279,
        "ml.c5.large" => 0.102,
        "ml.c5.xlarge" => 0.204,
        "ml.c5.2xlarge" => 0.408,
        "ml.c5.4xlarge" => 0.816,
        "ml.r5.large" => 0.151,
        "ml.r5.xlarge" => 0.302,
        _ => return None,
    })
}

/// `RecommendationMetrics` for an instance type's best level.
pub fn recommendation_metrics(instance_type: &str, best: &Measured, setup_seconds: u64) -> Value {
    let per_minute = best.invocations_per_minute();
    let latency_ms = best.percentile_us(50.0).unwrap_or(0) as f64 / 1000.0;
    let mut metrics = serde_json::json!({
        "MaxInvocations": cove_model::convert::f64_to_i64(per_minute.floor()),
        "ModelLatency": cove_model::convert::f64_to_i64(latency_ms.round()),
        "ModelSetupTime": setup_seconds,
    });
    if let Some(hour) = cost_per_hour(instance_type) {
        metrics["CostPerHour"] = serde_json::json!(hour);
        if per_minute > 0.0 {
            metrics["CostPerInference"] = serde_json::json!(hour / (per_minute * 60.0));
        }
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn measured(users: usize, seconds: f64, latencies_ms: &[u64], errors: u64) -> Measured {
        Measured {
            users,
            seconds,
            latencies_us: latencies_ms.iter().map(|ms| ms * 1000).collect(),
            errors,
        }
    }

    #[test]
    fn stairs_and_phases_become_levels_within_the_job_duration() {
        let stairs = serde_json::from_value(
            json!({"Stairs": {"DurationInSeconds": 6, "NumberOfSteps": 3, "UsersPerStep": 2}}),
        )
        .unwrap();
        let got: Vec<_> = levels(Some(&stairs), None)
            .iter()
            .map(|l| (l.users, l.seconds))
            .collect();
        assert_eq!(got, [(2, 2.0), (4, 2.0), (6, 2.0)]);
        let phases = serde_json::from_value(
            json!({"Phases": [{"InitialNumberOfUsers": 1, "SpawnRate": 30, "DurationInSeconds": 5}]}),
        )
        .unwrap();
        let got: Vec<_> = levels(Some(&phases), None)
            .iter()
            .map(|l| (l.users, l.seconds))
            .collect();
        assert_eq!(got, [(1, 2.0), (2, 2.0), (3, 1.0)]);
        let cut: Vec<_> = levels(None, Some(3.0))
            .iter()
            .map(|l| (l.users, l.seconds))
            .collect();
        assert_eq!(cut, [(1, 2.0), (2, 1.0)]);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let l = measured(1, 1.0, &[5, 1, 4, 2, 3], 0);
        assert_eq!(l.percentile_us(50.0), Some(3000));
        assert_eq!(l.percentile_us(95.0), Some(5000));
        assert_eq!(l.percentile_us(0.0), Some(1000));
        assert_eq!(Measured::default().percentile_us(50.0), None);
    }

    #[test]
    fn the_best_level_is_the_fastest_within_the_thresholds() {
        let levels = [
            measured(1, 1.0, &[2; 100], 0),
            measured(2, 1.0, &[3; 150], 0),
            measured(4, 1.0, &[9; 180], 0),
            measured(8, 1.0, &[4; 300], 2),
        ];
        // No threshold: the fastest level without errors.
        assert_eq!(best(&levels, &[]).unwrap().users, 4);
        let p95_5ms = thresholds(Some(
            &serde_json::from_value(
                json!({"ModelLatencyThresholds": [{"Percentile": "P95", "ValueInMilliseconds": 5}]}),
            )
            .unwrap(),
        ));
        assert_eq!(p95_5ms, [(95.0, 5.0)]);
        assert_eq!(best(&levels, &p95_5ms).unwrap().users, 2);
        let tight = [(50.0, 1.0)];
        assert!(best(&levels, &tight).is_none());
    }

    #[test]
    fn metrics_report_throughput_latency_and_cost() {
        let l = measured(2, 2.0, &[4, 6, 5, 5], 0);
        let m = recommendation_metrics("ml.c5.large", &l, 3);
        assert_eq!(m["MaxInvocations"], 120);
        assert_eq!(m["ModelLatency"], 5);
        assert_eq!(m["CostPerHour"], 0.102);
        let per_inference = m["CostPerInference"].as_f64().unwrap();
        assert!((per_inference - 0.102 / 7200.0).abs() < 1e-12);
        let unknown = recommendation_metrics("ml.z9.large", &l, 3);
        assert!(unknown.get("CostPerHour").is_none());
    }
}
