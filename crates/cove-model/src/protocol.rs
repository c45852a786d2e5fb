//! The IP protocol of a security-group rule or network ACL entry, in the
//! canonical form Cove stores and AWS describes: `tcp`, `udp`, `icmp`,
//! `icmpv6` by name, `-1` for every protocol, any other protocol by number.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    All,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    /// Any other IP protocol number.
    Number(u8),
}

impl Protocol {
    /// What a client may send: a name or a number in any case, `-1` or `all`.
    /// `None` for anything else (AWS: "Unknown protocol").
    pub fn from_request(p: &str) -> Option<Protocol> {
        let lower = p.trim().to_ascii_lowercase();
        match lower.parse::<u8>() {
            Ok(n) => Some(Protocol::from_number(n)),
            Err(_) => lower.parse().ok(),
        }
    }

    /// The protocol with number `n`, by name when it has one.
    pub fn from_number(n: u8) -> Protocol {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 => Protocol::Icmp,
            58 => Protocol::Icmpv6,
            other => Protocol::Number(other),
        }
    }

    /// The IP protocol number; `None` for every protocol.
    pub fn number(self) -> Option<u8> {
        match self {
            Protocol::All => None,
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Icmp => Some(1),
            Protocol::Icmpv6 => Some(58),
            Protocol::Number(n) => Some(n),
        }
    }

    /// Whether the rule's range is one of ports (TCP and UDP).
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::All => f.write_str("-1"),
            Protocol::Tcp => f.write_str("tcp"),
            Protocol::Udp => f.write_str("udp"),
            Protocol::Icmp => f.write_str("icmp"),
            Protocol::Icmpv6 => f.write_str("icmpv6"),
            Protocol::Number(n) => write!(f, "{n}"),
        }
    }
}

/// Reads the canonical text and the numbers of the named protocols.
impl FromStr for Protocol {
    type Err = ();
    fn from_str(s: &str) -> Result<Protocol, ()> {
        Ok(match s {
            "-1" | "all" => Protocol::All,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            "icmpv6" => Protocol::Icmpv6,
            other if other.bytes().all(|b| b.is_ascii_digit()) => {
                Protocol::from_number(other.parse().map_err(|_| ())?)
            }
            _ => return Err(()),
        })
    }
}

impl serde::Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|()| serde::de::Error::custom(format!("{text} is not an IP protocol")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_protocols_by_name_or_number() {
        assert_eq!(Protocol::from_request("TCP"), Some(Protocol::Tcp));
        assert_eq!(Protocol::from_request("6"), Some(Protocol::Tcp));
        assert_eq!(Protocol::from_request("58"), Some(Protocol::Icmpv6));
        assert_eq!(Protocol::from_request("all"), Some(Protocol::All));
        assert_eq!(Protocol::from_request("50"), Some(Protocol::Number(50)));
        assert_eq!(Protocol::from_request("256"), None);
        assert_eq!(Protocol::from_request("+6"), Some(Protocol::Tcp));
        assert_eq!(Protocol::from_request("gre"), None);
    }

    #[test]
    fn stored_in_canonical_text() {
        for (p, text) in [
            (Protocol::All, "\"-1\""),
            (Protocol::Tcp, "\"tcp\""),
            (Protocol::Icmpv6, "\"icmpv6\""),
            (Protocol::Number(50), "\"50\""),
        ] {
            assert_eq!(serde_json::to_string(&p).unwrap(), text);
            assert_eq!(serde_json::from_str::<Protocol>(text).unwrap(), p);
        }
        assert_eq!(Protocol::Udp.number(), Some(17));
        assert_eq!(Protocol::All.number(), None);
    }
}
