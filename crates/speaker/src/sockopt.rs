//! Socket options tokio does not expose: TCP MD5 signatures (RFC 2385),
//! the GTSM minimum TTL (RFC 5082) and the outgoing TTL / hop limit set
//! before `connect`. The only `unsafe` in this crate lives here, as thin
//! `setsockopt` calls on a file descriptor the caller owns.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// Longest TCP MD5 key (`TCP_MD5SIG_MAXKEYLEN`).
const MD5_MAX_KEY: usize = 80;

/// `struct tcp_md5sig` from `<linux/tcp.h>`.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY],
}

fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is an open socket borrowed from its owner for the call;
    // `value` points to a live, initialised `T` of exactly `len` bytes,
    // which the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets (or with `key == None`, removes) the TCP MD5 key used with `peer`
/// on `fd` (a listening socket, or one about to connect).
pub fn set_md5_key(fd: &impl AsRawFd, peer: IpAddr, key: Option<&[u8]>) -> io::Result<()> {
    let key = key.unwrap_or_default();
    if key.len() > MD5_MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP MD5 key longer than {MD5_MAX_KEY} bytes"),
        ));
    }
    // SAFETY: sockaddr_storage and the rest are plain integers and arrays,
    // for which all-zero bytes are a valid value.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    write_sockaddr(&mut sig.addr, SocketAddr::new(peer, 0));
    sig.keylen = key.len() as u16; // <= 80, checked above
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

fn write_sockaddr(storage: &mut libc::sockaddr_storage, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned
            // for sockaddr_in; we write one value at its start.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
}

/// Sets the TTL (IPv4) or hop limit (IPv6) of packets sent on `fd`.
pub fn set_ttl(fd: &impl AsRawFd, v6: bool, ttl: u8) -> io::Result<()> {
    let v = libc::c_int::from(ttl);
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &v)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &v)
    }
}

/// GTSM: drop packets on `fd` that arrive with a TTL (hop limit) below `min`.
pub fn set_min_ttl(fd: &impl AsRawFd, v6: bool, min: u8) -> io::Result<()> {
    let v = libc::c_int::from(min);
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &v)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &v)
    }
}

/// Makes an IPv6 socket IPv6-only, so `[::]:179` and `0.0.0.0:179` can
/// both be bound.
pub fn set_v6_only(fd: &impl AsRawFd) -> io::Result<()> {
    let v: libc::c_int = 1;
    setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_apply_to_a_real_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        set_md5_key(&l, "127.0.0.2".parse().expect("ip"), Some(b"secret")).expect("md5");
        set_md5_key(&l, "127.0.0.2".parse().expect("ip"), None).expect("md5 removed");
        set_ttl(&l, false, 255).expect("ttl");
        set_min_ttl(&l, false, 254).expect("minttl");
        assert!(set_md5_key(&l, "127.0.0.2".parse().expect("ip"), Some(&[b'x'; 81])).is_err());
    }
}
