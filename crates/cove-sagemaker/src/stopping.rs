//! `Stop*Job`: the flag a stoppable job carries for its driver, and the
//! handler that sets it or refuses with AWS's message.

use crate::common::Caller;
use cove_model::world::{Resource, World};

/// A stored job that `Stop*Job` can stop: its worker sees
/// `stop_requested` and ends it.
pub trait Stoppable: Resource {
    /// The status Stop answers about, and whether Stop applies to it.
    fn status(&self) -> &str;
    fn stoppable(&self) -> bool;
    /// Marks the stop: the flag, the `Stopping` status of its kind, the time.
    fn request_stop(&mut self, now: String);
    /// Whether Stop has been called.
    fn stop_requested(&self) -> bool;
}

/// Implements [`Stoppable`] for a job with `status`, `stop_requested` and
/// `last_modified_time` fields: Stop applies while `$stoppable` holds and
/// sets the status to `$stopping`.
macro_rules! stoppable {
    ($job:ty, $stopping:expr, |$j:ident| $stoppable:expr) => {
        impl $crate::stopping::Stoppable for $job {
            fn status(&self) -> &str {
                self.status.as_str()
            }
            fn stoppable(&self) -> bool {
                let $j = self;
                $stoppable
            }
            fn stop_requested(&self) -> bool {
                self.stop_requested
            }
            fn request_stop(&mut self, now: String) {
                self.stop_requested = true;
                self.status = $stopping;
                self.last_modified_time = now;
            }
        }
    };
}
pub(crate) use stoppable;

/// `Stop*Job`: marks the job found by `find` for its worker, or refuses
/// with AWS's message when the job is not running (`what`: "transform job").
pub fn stop<R: Stoppable>(
    store: &Caller,
    what: &str,
    find: impl Fn(&World) -> cove_model::AwsResult<&R>,
) -> cove_model::AwsResult<serde_json::Value> {
    store.write(|tx| {
        let mut j = find(&tx.world)?.clone();
        if !j.stoppable() {
            return Err(crate::common::validation(format!(
                "The request was rejected because the {what} is in status {}.",
                j.status()
            )));
        }
        j.request_stop(cove_model::ids::now_rfc3339());
        tx.put(j);
        Ok(())
    })?;
    Ok(serde_json::json!({}))
}
