//! Shipping a container's log file to a CloudWatch Logs stream, from where
//! the last shipment ended, so a restart neither loses nor repeats lines.

use cove_logs::LogsService;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Ships a container's log file to CloudWatch Logs, line by line, keeping its
/// offset beside the file so a restarted Cove neither loses nor repeats lines.
pub struct LogShipper {
    log: PathBuf,
    offset_file: PathBuf,
    stream: String,
    offset: u64,
}

impl LogShipper {
    /// Ships `dir/container.log` to the stream `name` gives, which is kept
    /// in `dir/log-stream` so a restart keeps writing to the same stream.
    pub fn new(dir: &Path, name: impl FnOnce() -> String) -> LogShipper {
        let stream_file = dir.join("log-stream");
        let stream = std::fs::read_to_string(&stream_file).unwrap_or_else(|_| {
            let s = name();
            let _ = std::fs::write(&stream_file, &s);
            s
        });
        let offset_file = dir.join("log-offset");
        let offset = std::fs::read_to_string(&offset_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        LogShipper {
            log: dir.join("container.log"),
            offset_file,
            stream,
            offset,
        }
    }

    pub fn ship(&mut self, logs: &LogsService, region: &str, account: &str, group: &str) {
        let Ok(mut file) = std::fs::File::open(&self.log) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if file.take(4 * 1024 * 1024).read_to_end(&mut buf).is_err() {
            return;
        }
        let Some(last_newline) = buf.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let text = String::from_utf8_lossy(&buf[..last_newline]);
        let now = cove_logs::now_ms();
        let events: Vec<(i64, String)> = text
            .split('\n')
            .map(|l| {
                (
                    now,
                    if l.is_empty() {
                        " ".to_string()
                    } else {
                        l.to_string()
                    },
                )
            })
            .collect();
        let shipped = logs
            .ensure_stream(region, account, group, &self.stream)
            .and_then(|_| {
                for chunk in events.chunks(1000) {
                    logs.put_events(region, account, group, &self.stream, chunk)?;
                }
                Ok(())
            });
        match shipped {
            Ok(()) => {
                self.offset += last_newline as u64 + 1;
                let _ = std::fs::write(&self.offset_file, self.offset.to_string());
            }
            Err(e) => tracing::warn!(error = %e.message, "shipping job logs failed"),
        }
    }
}
