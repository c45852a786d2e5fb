//! Shipping a container's log file to a CloudWatch Logs stream exactly
//! once across crashes: each batch of lines and the file offset it ends at
//! are stored in one transaction of the logs database, and a restarted
//! shipper resumes from the stored offset.

use cove_logs::LogsService;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// At most this many events, and bytes (with PutLogEvents' 26 per event),
/// per stored batch: within PutLogEvents' limits of 10,000 and 1 MiB.
const BATCH_EVENTS: usize = 1000;
const BATCH_BYTES: usize = 1024 * 1024;

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

    pub fn ship(&mut self, logs: &LogsService, region: &str, account: &str, group: &str) {
        let offset = match self.offset {
            Some(o) => o,
            None => match logs.shipped_offset(&self.source) {
                Ok(0) => self.legacy_offset,
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e.message, "reading the shipped log offset failed");
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
        if let Err(e) = logs.ensure_stream(region, account, group, &self.stream) {
            tracing::warn!(error = %e.message, "shipping job logs failed");
            return;
        }
        for chunk in batches(&lines) {
            let events: Vec<&(i64, String)> = chunk.iter().map(|(e, _)| e).collect();
            let events: Vec<(i64, &str)> = events.iter().map(|(t, m)| (*t, m.as_str())).collect();
            let chunk_end = chunk.last().map(|(_, end)| *end).unwrap_or(offset);
            match logs.put_shipped_events(
                region,
                account,
                group,
                &self.stream,
                &events,
                &self.source,
                chunk_end,
            ) {
                Ok(()) => self.offset = Some(chunk_end),
                Err(e) => {
                    tracing::warn!(error = %e.message, "shipping job logs failed");
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
