//! Route 53 hosted zones as stored: a zone's records live in its document
//! (zones in VPC designs hold tens of records, and a change batch is then
//! one write), and the changes a client may poll.

use serde::{Deserialize, Serialize};

/// A VPC a private zone answers in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneVpc {
    pub vpc_id: String,
    pub region: String,
}

/// One record set: a name (lower case, with its trailing dot), a type and its values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSet {
    pub name: String,
    pub kind: String,
    pub ttl: Option<i64>,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostedZone {
    /// `Z` and 20 upper-case letters and digits (without `/hostedzone/`).
    pub id: String,
    /// Lower case, with its trailing dot.
    pub name: String,
    pub caller_reference: String,
    pub comment: Option<String>,
    pub private: bool,
    pub vpcs: Vec<ZoneVpc>,
    pub records: Vec<RecordSet>,
}

impl HostedZone {
    /// Whether `name` (lower case, trailing dot) lies in this zone.
    pub fn holds(&self, name: &str) -> bool {
        name == self.name || name.ends_with(&format!(".{}", self.name))
    }
}

/// A submitted change, which `GetChange` reports (Cove applies changes at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route53Change {
    /// `C` and 20 upper-case letters and digits.
    pub id: String,
    pub submitted_at: String,
    pub comment: Option<String>,
}
