//! IP addresses and prefixes in the datapath's encoding: four 32-bit words holding the
//! address bytes in network order (IPv4 in the first word), plus a family byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::abi;
use aya::maps::lpm_trie::Key;
use ipnet::IpNet;

pub fn family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => abi::FAMILY_IPV4,
        IpAddr::V6(_) => abi::FAMILY_IPV6,
    }
}

pub fn to_words(ip: IpAddr) -> [u32; 4] {
    let mut words = [0u32; 4];
    match ip {
        IpAddr::V4(v4) => words[0] = u32::from_ne_bytes(v4.octets()),
        IpAddr::V6(v6) => {
            for (word, chunk) in words.iter_mut().zip(v6.octets().chunks_exact(4)) {
                *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
        }
    }
    words
}

/// The address `words` hold, or `None` for an unknown family.
pub fn from_words(family: u8, words: [u32; 4]) -> Option<IpAddr> {
    match family {
        abi::FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))),
        abi::FAMILY_IPV6 => {
            let mut octets = [0u8; 16];
            for (chunk, word) in octets.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

pub fn ipcache_key(prefix: IpNet) -> Key<abi::IpcacheKey> {
    let prefix = prefix.trunc();
    Key::new(
        abi::IPCACHE_STATIC_PREFIX + u32::from(prefix.prefix_len()),
        abi::IpcacheKey {
            family: family(prefix.addr()),
            addr: to_words(prefix.addr()),
            ..Default::default()
        },
    )
}

pub fn ipcache_prefix(key: &Key<abi::IpcacheKey>) -> Option<IpNet> {
    let data = key.data();
    let addr = from_words(data.family, data.addr)?;
    let len = key.prefix_len().checked_sub(abi::IPCACHE_STATIC_PREFIX)?;
    IpNet::new(addr, u8::try_from(len).ok()?).ok()
}

pub fn endpoint_key(ip: IpAddr) -> abi::EndpointKey {
    abi::EndpointKey {
        addr: to_words(ip),
        family: family(ip),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_keep_network_byte_order() {
        let ip: IpAddr = "10.0.1.7".parse().expect("ip");
        let words = to_words(ip);
        assert_eq!(words[0].to_ne_bytes(), [10, 0, 1, 7]);
        assert_eq!(from_words(abi::FAMILY_IPV4, words), Some(ip));
        let v6: IpAddr = "fd00::1:2".parse().expect("ip");
        assert_eq!(from_words(abi::FAMILY_IPV6, to_words(v6)), Some(v6));
        assert_eq!(from_words(9, words), None);
    }

    #[test]
    fn ipcache_keys_count_the_static_bits() {
        let prefix: IpNet = "10.0.1.9/24".parse().expect("net");
        let key = ipcache_key(prefix);
        assert_eq!(key.prefix_len(), 32 + 24);
        assert_eq!(
            ipcache_prefix(&key),
            Some("10.0.1.0/24".parse().expect("net"))
        );
        let host: IpNet = "fd00::5/128".parse().expect("net");
        assert_eq!(ipcache_prefix(&ipcache_key(host)), Some(host));
    }
}
