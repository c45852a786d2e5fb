//! IPv4 CIDR arithmetic for VPCs and subnets: parsing in AWS's lenient form
//! (host bits are cleared, as CreateVpc does), containment, overlap, and the
//! five addresses AWS reserves in every subnet. Stored and rendered as the
//! canonical `a.b.c.d/n` text.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub base: u32,
    pub prefix: u8,
}

impl Cidr {
    /// A CIDR from constant parts; host bits must already be clear.
    pub const fn from_octets(octets: [u8; 4], prefix: u8) -> Cidr {
        Cidr {
            base: u32::from_be_bytes(octets),
            prefix,
        }
    }
    /// Every IPv4 address (`0.0.0.0/0`).
    pub const ANY: Cidr = Cidr::from_octets([0, 0, 0, 0], 0);

    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Cidr> {
        if prefix > 32 {
            return None;
        }
        let base = u32::from(addr) & Self::mask_of(prefix);
        Some(Cidr { base, prefix })
    }
    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }
    pub fn mask(&self) -> u32 {
        Self::mask_of(self.prefix)
    }
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }
    pub fn last(&self) -> u32 {
        self.base | !self.mask()
    }
    pub fn contains_addr(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == self.base
    }
    /// Whether `other` lies wholly inside `self`.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && other.base & self.mask() == self.base
    }
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }
    /// The address at `offset` from the base (`nth(1)` is the VPC router).
    pub fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base.wrapping_add(offset))
    }
    /// Addresses an ENI may take: all but the first four and the last.
    pub fn usable_count(&self) -> u64 {
        self.size().saturating_sub(5)
    }
    /// Whether an address is one of the five AWS keeps for itself.
    pub fn is_reserved(&self, a: Ipv4Addr) -> bool {
        let v = u32::from(a);
        v < self.base + 4 || v == self.last()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (a, p) = s.trim().split_once('/').ok_or(())?;
        let addr: Ipv4Addr = a.parse().map_err(|_| ())?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let prefix: u8 = p.parse().map_err(|_| ())?;
        Cidr::new(addr, prefix).ok_or(())
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        text.parse()
            .map_err(|()| serde::de::Error::custom(format!("{text} is not an IPv4 CIDR")))
    }
}

/// The same addresses as `cidrs`, without any CIDR that another one holds
/// (two prefixes either nest or are disjoint), sorted: what an interval
/// set can take, since the kernel refuses overlapping elements.
pub fn outermost(cidrs: &[Cidr]) -> Vec<Cidr> {
    let mut by_size: Vec<Cidr> = cidrs.to_vec();
    by_size.sort_by_key(|c| (c.prefix, c.base));
    let mut kept: Vec<Cidr> = Vec::new();
    for c in by_size {
        if !kept.iter().any(|k| k.contains(&c)) {
            kept.push(c);
        }
    }
    kept.sort_by_key(|c| c.base);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_canonicalizes() {
        assert_eq!(c("100.68.0.18/18").to_string(), "100.68.0.0/18");
        assert_eq!(c("10.0.0.0/16").size(), 65536);
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.256/8".parse::<Cidr>().is_err());
        assert!("10.0.0.0/-1".parse::<Cidr>().is_err());
        assert!("10.0.0.0/".parse::<Cidr>().is_err());
        assert_eq!(c("0.0.0.0/0").mask(), 0);
        assert_eq!(c("0.0.0.0/0"), Cidr::ANY);
    }

    #[test]
    fn stored_as_text() {
        let json = serde_json::to_string(&c("10.0.1.0/24")).unwrap();
        assert_eq!(json, "\"10.0.1.0/24\"");
        assert_eq!(
            serde_json::from_str::<Cidr>(&json).unwrap(),
            c("10.0.1.0/24")
        );
        assert!(serde_json::from_str::<Cidr>("\"10.0.1.0\"").is_err());
    }

    #[test]
    fn containment_and_overlap() {
        let vpc = c("10.0.0.0/16");
        assert!(vpc.contains(&c("10.0.1.0/24")));
        assert!(!vpc.contains(&c("10.1.0.0/24")));
        assert!(!c("10.0.1.0/24").contains(&vpc));
        assert!(c("10.0.0.0/24").overlaps(&c("10.0.0.128/25")));
        assert!(!c("10.0.0.0/25").overlaps(&c("10.0.0.128/25")));
        assert!(vpc.contains_addr("10.0.255.255".parse().unwrap()));
    }

    #[test]
    fn reserved_addresses() {
        let s = c("10.0.1.0/24");
        assert_eq!(s.usable_count(), 251);
        assert_eq!(c("10.0.1.0/28").usable_count(), 11);
        for r in ["10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.255"] {
            assert!(s.is_reserved(r.parse().unwrap()), "{r}");
        }
        assert!(!s.is_reserved("10.0.1.4".parse().unwrap()));
        assert_eq!(s.nth(2).to_string(), "10.0.1.2");
    }

    #[test]
    fn outermost_drops_nested_prefixes() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert_eq!(
            outermost(&[
                c("10.0.1.0/24"),
                c("10.0.0.0/16"),
                c("192.0.2.0/24"),
                c("10.0.0.0/16")
            ]),
            vec![c("10.0.0.0/16"), c("192.0.2.0/24")]
        );
        assert_eq!(
            outermost(&[c("10.0.2.0/24"), c("0.0.0.0/0")]),
            vec![c("0.0.0.0/0")]
        );
        assert_eq!(
            outermost(&[c("10.0.2.0/24"), c("10.0.1.0/24")]),
            vec![c("10.0.1.0/24"), c("10.0.2.0/24")]
        );
    }
}
