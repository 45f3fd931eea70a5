//! This machine's interfaces and addresses (`getifaddrs`): to tell others
//! how to join, and for LAN discovery to choose where to announce.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses others can reach a peer bound to `bind` at: `bind` itself
/// if it is a specific address; otherwise the up interfaces' addresses of
/// its family (both families for `::`), loopback and IPv6 link-local ones
/// left out unless there is nothing else.
pub fn local_addrs(bind: IpAddr) -> Vec<IpAddr> {
    if !bind.is_unspecified() {
        return vec![bind];
    }
    let all: Vec<IpAddr> = interfaces().into_iter().flat_map(|i| i.addrs).collect();
    let wanted = |a: &IpAddr| bind.is_ipv6() || a.is_ipv4();
    let mut good: Vec<IpAddr> = all
        .iter()
        .copied()
        .filter(|a| wanted(a) && !a.is_loopback() && !link_local(a))
        .collect();
    if good.is_empty() {
        good = all
            .into_iter()
            .filter(|a| wanted(a) && a.is_loopback())
            .collect();
    }
    if good.is_empty() {
        good.push(if bind.is_ipv6() {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        });
    }
    // IPv4 first: shorter to type.
    good.sort_by_key(|a| a.is_ipv6());
    good.dedup();
    good
}

fn link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// One interface that is up: its index, whether it is loopback or takes
/// multicast, and its addresses.
#[derive(Debug, Default)]
pub struct Iface {
    pub index: u32,
    pub loopback: bool,
    pub multicast: bool,
    pub addrs: Vec<IpAddr>,
}

/// The interfaces that are up, with their addresses (`getifaddrs`).
pub fn interfaces() -> Vec<Iface> {
    let mut out: Vec<Iface> = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills in a list that we walk and then free.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut p = head;
        while !p.is_null() {
            let ifa = &*p;
            p = ifa.ifa_next;
            let flags = ifa.ifa_flags;
            if ifa.ifa_addr.is_null() || flags & libc::IFF_UP as u32 == 0 {
                continue;
            }
            let addr = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            };
            let index = libc::if_nametoindex(ifa.ifa_name);
            if index == 0 {
                continue;
            }
            let i = match out.iter().position(|i| i.index == index) {
                Some(n) => n,
                None => {
                    out.push(Iface {
                        index,
                        loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
                        multicast: flags & libc::IFF_MULTICAST as u32 != 0,
                        addrs: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            out[i].addrs.push(addr);
        }
        libc::freeifaddrs(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specific_bind_address_is_the_answer() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(local_addrs(lo), [lo]);
    }

    #[test]
    fn any_address_lists_some_of_the_right_family() {
        let v4 = local_addrs(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert!(!v4.is_empty());
        assert!(v4.iter().all(IpAddr::is_ipv4), "{v4:?}");
        assert!(
            v4.iter().all(|a| !a.is_loopback()) || v4.iter().all(|a| a.is_loopback()),
            "loopback only when nothing else: {v4:?}"
        );
    }
}
