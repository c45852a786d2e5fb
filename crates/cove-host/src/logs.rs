//! Shipping a container's log file to a CloudWatch Logs stream exactly
//! once across crashes: each batch of lines and the file offset it ends at
//! are stored in one transaction of the logs database, and a restarted
//! shipper resumes from the stored offset. Cove's own notes to a workload
//! (`cove: …` lines) are appended to the same file ([`note`]).

use cove_logs::LogsService;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Appends Cove's `line` to the container log at `log` (made with its
/// directory if need be), where the workload's own output goes and is
/// shipped from.
pub fn note(log: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes())
}

/// At most this many events, and bytes (with PutLogEvents' 26 per event),
/// per stored batch: within PutLogEvents' limits of 10,000 and 1 MiB.
const BATCH_EVENTS: usize = 1000;
const BATCH_BYTES: usize = 1024 * 1024;

/// Where shipped lines go: CloudWatch Logs itself on the control plane,
/// or, on an agent, the control plane through the store.
pub trait LogSink: Send + Sync {
    /// How far `source` has been shipped (0 when never).
    fn shipped_offset(&self, source: &str) -> Result<u64, String>;
    /// Stores one batch, creating its group and stream as needed; a batch
    /// whose `end` its source has already reached is dropped, so a batch
    /// sent twice is stored once.
    fn put(&self, batch: &ShippedBatch) -> Result<(), String>;
}

/// One batch of a log file's lines, and the file offset just past them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShippedBatch {
    pub region: String,
    pub account: String,
    pub group: String,
    pub stream: String,
    /// `(timestamp ms, line)`, in order.
    pub events: Vec<(i64, String)>,
    pub source: String,
    pub end: u64,
}

impl LogSink for LogsService {
    fn shipped_offset(&self, source: &str) -> Result<u64, String> {
        LogsService::shipped_offset(self, source).map_err(|e| e.message)
    }

    fn put(&self, b: &ShippedBatch) -> Result<(), String> {
        store_batch(self, b).map_err(|e| e.message)
    }
}

/// Stores one batch in CloudWatch Logs, creating its group and stream as
/// needed.
pub fn store_batch(logs: &LogsService, b: &ShippedBatch) -> cove_model::AwsResult<()> {
    logs.ensure_stream(&b.region, &b.account, &b.group, &b.stream)?;
    logs.put_shipped_events(
        &b.region, &b.account, &b.group, &b.stream, &b.events, &b.source, b.end,
    )
}

/// Ships a container's log file to CloudWatch Logs, line by line.
pub struct LogShipper {
    log: PathBuf,
    /// The file's identity in the logs database: an id made when the
    /// shipper first met the directory, so a directory made again for a job
    /// of the same name starts from zero.
    source: String,
    /// Where shipping resumes; read from the logs database at first use.
    offset: Option<u64>,
    /// The offset an older Cove kept beside the file (before the database
    /// kept it), the starting point when the database has none.
    legacy_offset: u64,
    stream: String,
}

impl LogShipper {
    /// Ships `dir/container.log` to the stream `name` gives, which is kept
    /// in `dir/log-stream` so a restart keeps writing to the same stream.
    pub fn new(dir: &Path, name: impl FnOnce() -> String) -> LogShipper {
        let kept = |file: &str, make: &mut dyn FnMut() -> String| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).unwrap_or_else(|_| {
                let s = make();
                let _ = std::fs::write(&path, &s);
                s
            })
        };
        let mut name = Some(name);
        let stream = kept("log-stream", &mut || {
            name.take().map(|n| n()).unwrap_or_default()
        });
        let source = kept("log-source", &mut || uuid::Uuid::new_v4().to_string());
        let legacy_offset = std::fs::read_to_string(dir.join("log-offset"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        LogShipper {
            log: dir.join("container.log"),
            source,
            offset: None,
            legacy_offset,
            stream,
        }
    }

    pub fn ship(&mut self, logs: &dyn LogSink, region: &str, account: &str, group: &str) {
        let offset = match self.offset {
            Some(o) => o,
            None => match logs.shipped_offset(&self.source) {
                Ok(0) => self.legacy_offset,
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the shipped log offset failed");
                    return;
                }
            },
        };
        self.offset = Some(offset);
        let Ok(mut file) = std::fs::File::open(&self.log) else {
            return;
        };
        if file.seek(SeekFrom::Start(offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if file.take(4 * 1024 * 1024).read_to_end(&mut buf).is_err() {
            return;
        }
        let Some(last_newline) = buf.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let now = cove_logs::now_ms();
        // Each line with the file offset just past its newline.
        let mut end = offset;
        let lines: Vec<((i64, String), u64)> = buf[..=last_newline]
            .split_inclusive(|b| *b == b'\n')
            .map(|line| {
                end += line.len() as u64;
                let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                let text = if text.is_empty() {
                    " ".to_string()
                } else {
                    text.into_owned()
                };
                ((now, text), end)
            })
            .collect();
        for chunk in batches(&lines) {
            let batch = ShippedBatch {
                region: region.to_string(),
                account: account.to_string(),
                group: group.to_string(),
                stream: self.stream.clone(),
                events: chunk.iter().map(|(e, _)| e.clone()).collect(),
                source: self.source.clone(),
                end: chunk.last().map(|(_, end)| *end).unwrap_or(offset),
            };
            match logs.put(&batch) {
                Ok(()) => self.offset = Some(batch.end),
                Err(e) => {
                    tracing::warn!(error = %e, "shipping job logs failed");
                    return;
                }
            }
        }
    }
}

/// `lines` cut into batches within [`BATCH_EVENTS`] and [`BATCH_BYTES`]
/// (the runtime splits lines at 64 KiB, so every line fits one).
fn batches<T>(lines: &[((i64, String), T)]) -> Vec<&[((i64, String), T)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, ((_, text), _)) in lines.iter().enumerate() {
        let size = text.len() + 26;
        if i > start && (i - start == BATCH_EVENTS || bytes + size > BATCH_BYTES) {
            out.push(&lines[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < lines.len() {
        out.push(&lines[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_shipper_neither_repeats_nor_loses_lines() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogsService::in_memory().unwrap();
        let log = dir.path().join("container.log");
        std::fs::write(&log, "one\ntwo\npartial").unwrap();
        let ship = || LogShipper::new(dir.path(), || "algo-1".into());
        ship().ship(&logs, "us-east-1", "123456789012", "g");
        // A restart: a new shipper, and the old file offset is not trusted.
        std::fs::write(dir.path().join("log-offset"), "0").unwrap();
        ship().ship(&logs, "us-east-1", "123456789012", "g");
        std::fs::write(&log, "one\ntwo\npartial line\nthree\n").unwrap();
        ship().ship(&logs, "us-east-1", "123456789012", "g");
        let page = logs
            .get_log_events(
                "us-east-1",
                "123456789012",
                "g",
                "algo-1",
                &cove_logs::GetEventsRequest {
                    start_from_head: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let got: Vec<&str> = page.events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(got, ["one", "two", "partial line", "three"]);
    }

    #[test]
    fn batches_keep_within_put_log_events_limits_and_lose_nothing() {
        let line = |n: usize| ((0i64, "x".repeat(n)), ());
        let many: Vec<_> = (0..2500).map(|_| line(10)).collect();
        let sizes: Vec<usize> = batches(&many).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let long: Vec<_> = (0..40).map(|_| line(64 * 1024)).collect();
        let cut = batches(&long);
        assert!(cut
            .iter()
            .all(|b| b.iter().map(|((_, t), _)| t.len() + 26).sum::<usize>() <= BATCH_BYTES));
        assert_eq!(cut.iter().map(|b| b.len()).sum::<usize>(), 40);
        assert!(batches::<()>(&[]).is_empty());
    }
}
