//! Pagination tokens. Events are ordered by `(timestamp, sequence)`, so a
//! position in a stream or group is an [`EventKey`]; a token names a position
//! and, for `GetLogEvents`, the direction to read from it.
//!
//! - `GetLogEvents`: `f/<19-digit timestamp><19-digit sequence>` reads events
//!   strictly after the key, `b/<...>` strictly before it (the digit form
//!   mirrors AWS's own `f/3731…` tokens, which clients compare for equality).
//! - Every other `nextToken` is opaque: URL-safe base64 of a short tagged
//!   string holding the sort key of the last item returned.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// A position in `(timestamp, sequence)` order. Sequences start at 1, so
/// `(t, 0)` sits just before every event at `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventKey {
    pub ts: i64,
    pub seq: i64,
}

impl EventKey {
    /// Before every event.
    pub const MIN: EventKey = EventKey { ts: 0, seq: 0 };
    /// After every event.
    pub const MAX: EventKey = EventKey {
        ts: i64::MAX,
        seq: i64::MAX,
    };

    /// 38 digits: the timestamp and the sequence, each zero-padded to 19.
    /// Also used as the `eventId` of `FilterLogEvents`.
    pub fn digits(&self) -> String {
        format!("{:019}{:019}", self.ts.max(0), self.seq.max(0))
    }

    fn from_digits(s: &str) -> Option<EventKey> {
        if s.len() != 38 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(EventKey {
            ts: s[..19].parse().ok()?,
            seq: s[19..].parse().ok()?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// A `GetLogEvents` token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamToken {
    pub direction: Direction,
    pub key: EventKey,
}

impl StreamToken {
    pub fn forward(key: EventKey) -> StreamToken {
        StreamToken {
            direction: Direction::Forward,
            key,
        }
    }

    pub fn backward(key: EventKey) -> StreamToken {
        StreamToken {
            direction: Direction::Backward,
            key,
        }
    }

    pub fn encode(&self) -> String {
        let d = match self.direction {
            Direction::Forward => 'f',
            Direction::Backward => 'b',
        };
        format!("{d}/{}", self.key.digits())
    }

    pub fn decode(s: &str) -> Option<StreamToken> {
        let (d, rest) = s.split_once('/')?;
        let direction = match d {
            "f" => Direction::Forward,
            "b" => Direction::Backward,
            _ => return None,
        };
        Some(StreamToken {
            direction,
            key: EventKey::from_digits(rest)?,
        })
    }
}

/// The `nextToken` of the describe and filter calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageToken {
    /// `DescribeLogGroups`: the last group name returned.
    Group(String),
    /// `DescribeLogStreams` by name: the last stream name returned.
    StreamByName(String),
    /// `DescribeLogStreams` by last event time: its sort key (`-1` for a
    /// stream without events) and name.
    StreamByTime(i64, String),
    /// `FilterLogEvents`: the last event examined.
    Filter(EventKey),
}

impl PageToken {
    pub fn encode(&self) -> String {
        let raw = match self {
            PageToken::Group(name) => format!("g:{name}"),
            PageToken::StreamByName(name) => format!("n:{name}"),
            PageToken::StreamByTime(ts, name) => format!("t:{ts}:{name}"),
            PageToken::Filter(key) => format!("e:{}", key.digits()),
        };
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(s: &str) -> Option<PageToken> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let (tag, rest) = raw.split_once(':')?;
        match tag {
            "g" if !rest.is_empty() => Some(PageToken::Group(rest.to_string())),
            "n" if !rest.is_empty() => Some(PageToken::StreamByName(rest.to_string())),
            "t" => {
                let (ts, name) = rest.split_once(':')?;
                if name.is_empty() {
                    return None;
                }
                Some(PageToken::StreamByTime(ts.parse().ok()?, name.to_string()))
            }
            "e" => Some(PageToken::Filter(EventKey::from_digits(rest)?)),
            _ => None,
        }
    }
}

/// The sequence token `PutLogEvents` and `DescribeLogStreams` answer: the
/// stream's last stored sequence as 56 digits (AWS's tokens are 56 digits too).
pub fn sequence_token(seq: i64) -> String {
    format!("{:056}", seq.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_tokens_round_trip_and_keep_their_shape() {
        let t = StreamToken::forward(EventKey {
            ts: 1_700_000_000_123,
            seq: 42,
        });
        let s = t.encode();
        assert_eq!(s, "f/00000017000000001230000000000000000042");
        assert_eq!(StreamToken::decode(&s), Some(t));
        let b = StreamToken::backward(EventKey::MAX);
        assert_eq!(StreamToken::decode(&b.encode()), Some(b));
        assert_eq!(
            StreamToken::decode(&StreamToken::forward(EventKey::MIN).encode()),
            Some(StreamToken::forward(EventKey::MIN))
        );
    }

    #[test]
    fn malformed_stream_tokens_are_refused() {
        for bad in [
            "",
            "f/",
            "x/00000000000000000000000000000000000000",
            "f/0000000000000000000000000000000000000",
            "f/0000000000000000000000000000000000000a",
            "f/99999999999999999999999999999999999999",
            "f00000000000000000000000000000000000000",
        ] {
            assert_eq!(StreamToken::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn page_tokens_round_trip() {
        for t in [
            PageToken::Group("/aws/lambda/x".into()),
            PageToken::StreamByName("a:b".into()),
            PageToken::StreamByTime(-1, "s".into()),
            PageToken::StreamByTime(1_700_000_000_000, "x:y".into()),
            PageToken::Filter(EventKey { ts: 5, seq: 9 }),
        ] {
            let s = t.encode();
            assert!(s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(PageToken::decode(&s), Some(t));
        }
        assert_eq!(PageToken::decode("not base64!"), None);
        assert_eq!(PageToken::decode(&URL_SAFE_NO_PAD.encode("g:")), None);
        assert_eq!(PageToken::decode(&URL_SAFE_NO_PAD.encode("z:abc")), None);
    }

    #[test]
    fn sequence_tokens_are_digits() {
        let t = sequence_token(7);
        assert_eq!(t.len(), 56);
        assert!(t.ends_with('7') && t.bytes().all(|b| b.is_ascii_digit()));
    }
}
