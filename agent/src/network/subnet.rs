//! IPv4 subnets: parsing, overlap, and picking a free one.

use std::fmt;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub addr: u32,
    pub prefix: u8,
}

impl Subnet {
    /// `a.b.c.d/n`; host bits set are refused (as docker does).
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| format!("subnet {s:?} is not in CIDR form (10.1.0.0/16)"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("subnet {s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("subnet {s:?}: prefix {p:?} is not 0 to 32"))?;
        let sub = Subnet { addr: u32::from(addr), prefix };
        if sub.addr & !sub.mask() != 0 {
            return Err(format!("subnet {s:?} has host bits set (did you mean {}?)", Subnet { addr: sub.addr & sub.mask(), prefix }));
        }
        Ok(sub)
    }

    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr | !self.mask())
    }

    /// The `n`th address of the subnet.
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.addr.wrapping_add(n))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.addr
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let m = if self.prefix < other.prefix { self.mask() } else { other.mask() };
        self.addr & m == other.addr & m
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

/// The host's IPv4 routes with their interfaces (from `/proc/net/route`),
/// the default route left out.
pub fn host_routes() -> Vec<(String, Subnet)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else { return Vec::new() };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?.swap_bytes();
            let prefix = mask.count_ones() as u8;
            (prefix > 0).then(|| (f[0].to_owned(), Subnet { addr: dest & mask, prefix }))
        })
        .collect()
}

/// The interface of the default route (`eth0` when there is none).
pub fn default_route_interface() -> String {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000")).then(|| f[0].to_owned())
        })
        .unwrap_or_else(|| "eth0".into())
}

/// The first /24 of 10.78.0.0/15 and then of 172.30.0.0/15 that overlaps
/// neither a network's subnet nor a host route.
pub fn pick(taken: &[Subnet], host: &[(String, Subnet)]) -> Option<Subnet> {
    let pools = [
        Subnet { addr: u32::from(Ipv4Addr::new(10, 78, 0, 0)), prefix: 15 },
        Subnet { addr: u32::from(Ipv4Addr::new(172, 30, 0, 0)), prefix: 15 },
    ];
    for pool in pools {
        let count = 1u32 << (24 - pool.prefix);
        for i in 0..count {
            let s = Subnet { addr: pool.addr + (i << 8), prefix: 24 };
            if !taken.iter().any(|t| t.overlaps(&s)) && !host.iter().any(|(_, r)| r.overlaps(&s)) {
                return Some(s);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_overlap_and_are_picked_around_what_is_taken() {
        let a = Subnet::parse("10.1.0.0/16").unwrap();
        assert_eq!(a.to_string(), "10.1.0.0/16");
        assert_eq!(a.host(1), Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(a.broadcast(), Ipv4Addr::new(10, 1, 255, 255));
        assert!(a.overlaps(&Subnet::parse("10.1.5.0/24").unwrap()));
        assert!(Subnet::parse("10.0.0.0/8").unwrap().overlaps(&a));
        assert!(!a.overlaps(&Subnet::parse("10.2.0.0/16").unwrap()));
        assert!(Subnet::parse("10.1.0.1/16").unwrap_err().contains("host bits"));
        for bad in ["10.1.0.0", "10.1.0.0/33", "x/8", "10.1.0/16"] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
        let taken = [Subnet::parse("10.78.0.0/24").unwrap()];
        let host = [("eth9".to_owned(), Subnet::parse("10.78.1.0/24").unwrap())];
        assert_eq!(pick(&taken, &host).unwrap().to_string(), "10.78.2.0/24");
        let all = [Subnet::parse("10.78.0.0/15").unwrap()];
        assert_eq!(pick(&all, &[]).unwrap().to_string(), "172.30.0.0/24");
    }
}
