//! Cilium's ICMP type names (`pkg/policy/api/icmp.go`), the one table both the policy
//! validator and the policy engine read: a name the validator accepts always has a number
//! for the family it is used with.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::policy::IcmpFamily;

/// Name → (IPv4 type, IPv6 type); `None` where the name does not exist in that family.
const ICMP_TYPES: &[(&str, Option<u8>, Option<u8>)] = &[
    ("EchoReply", Some(0), Some(129)),
    ("DestinationUnreachable", Some(3), Some(1)),
    ("Redirect", Some(5), None),
    ("Echo", Some(8), None),
    ("EchoRequest", Some(8), Some(128)),
    ("RouterAdvertisement", Some(9), Some(134)),
    ("RouterSelection", Some(10), None),
    ("TimeExceeded", Some(11), Some(3)),
    ("ParameterProblem", Some(12), Some(4)),
    ("Timestamp", Some(13), None),
    ("TimestampReply", Some(14), None),
    ("Photuris", Some(40), None),
    ("ExtendedEchoRequest", Some(42), Some(160)),
    ("ExtendedEchoReply", Some(43), Some(161)),
    ("PacketTooBig", None, Some(2)),
    ("MulticastListenerQuery", None, Some(130)),
    ("MulticastListenerReport", None, Some(131)),
    ("MulticastListenerDone", None, Some(132)),
    ("RouterSolicitation", None, Some(133)),
    ("NeighborSolicitation", None, Some(135)),
    ("NeighborAdvertisement", None, Some(136)),
    ("RedirectMessage", None, Some(137)),
    ("RouterRenumbering", None, Some(138)),
    ("ICMPNodeInformationQuery", None, Some(139)),
    ("ICMPNodeInformationResponse", None, Some(140)),
    ("InverseNeighborDiscoverySolicitation", None, Some(141)),
    ("InverseNeighborDiscoveryAdvertisement", None, Some(142)),
    ("HomeAgentAddressDiscoveryRequest", None, Some(144)),
    ("HomeAgentAddressDiscoveryReply", None, Some(145)),
    ("MobilePrefixSolicitation", None, Some(146)),
    ("MobilePrefixAdvertisement", None, Some(147)),
    ("DuplicateAddressRequestCodeSuffix", None, Some(157)),
    ("DuplicateAddressConfirmationCodeSuffix", None, Some(158)),
];

/// Why an `icmps.fields[].type` has no number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IcmpTypeError {
    #[error("ICMP type {0} is outside 0..255")]
    OutOfRange(i32),
    #[error("{0:?} is not an ICMP type name")]
    UnknownName(String),
    #[error("{name:?} is not an {family:?} ICMP type")]
    WrongFamily { name: String, family: IcmpFamily },
}

/// The ICMP (or ICMPv6) message type `value` stands for in `family`.
pub fn icmp_type_number(value: &IntOrString, family: IcmpFamily) -> Result<u8, IcmpTypeError> {
    match value {
        IntOrString::Int(n) => u8::try_from(*n).map_err(|_| IcmpTypeError::OutOfRange(*n)),
        IntOrString::String(name) => {
            // Cilium accepts a number written as a string too.
            if let Ok(n) = name.parse::<i32>() {
                return u8::try_from(n).map_err(|_| IcmpTypeError::OutOfRange(n));
            }
            let (_, v4, v6) = ICMP_TYPES
                .iter()
                .find(|(known, _, _)| known == name)
                .ok_or_else(|| IcmpTypeError::UnknownName(name.clone()))?;
            match family {
                IcmpFamily::IPv4 => *v4,
                IcmpFamily::IPv6 => *v6,
            }
            .ok_or_else(|| IcmpTypeError::WrongFamily {
                name: name.clone(),
                family,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> IntOrString {
        IntOrString::String(n.into())
    }

    #[test]
    fn names_map_to_each_familys_number() {
        assert_eq!(
            icmp_type_number(&name("EchoRequest"), IcmpFamily::IPv4),
            Ok(8)
        );
        assert_eq!(
            icmp_type_number(&name("EchoRequest"), IcmpFamily::IPv6),
            Ok(128)
        );
        assert_eq!(icmp_type_number(&name("Echo"), IcmpFamily::IPv4), Ok(8));
        assert_eq!(
            icmp_type_number(&name("PacketTooBig"), IcmpFamily::IPv6),
            Ok(2)
        );
        assert_eq!(
            icmp_type_number(&name("Timestamp"), IcmpFamily::IPv4),
            Ok(13)
        );
        assert_eq!(
            icmp_type_number(&IntOrString::Int(42), IcmpFamily::IPv4),
            Ok(42)
        );
        assert_eq!(icmp_type_number(&name("13"), IcmpFamily::IPv4), Ok(13));
    }

    #[test]
    fn bad_types_say_why() {
        assert_eq!(
            icmp_type_number(&name("PacketTooBig"), IcmpFamily::IPv4),
            Err(IcmpTypeError::WrongFamily {
                name: "PacketTooBig".into(),
                family: IcmpFamily::IPv4
            })
        );
        assert!(matches!(
            icmp_type_number(&name("Galaxy"), IcmpFamily::IPv4),
            Err(IcmpTypeError::UnknownName(_))
        ));
        assert_eq!(
            icmp_type_number(&IntOrString::Int(300), IcmpFamily::IPv6),
            Err(IcmpTypeError::OutOfRange(300))
        );
    }

    #[test]
    fn every_name_has_a_number_in_some_family() {
        for (name, v4, v6) in ICMP_TYPES {
            assert!(v4.is_some() || v6.is_some(), "{name}");
        }
    }
}
