//! Who is on the other end of a loopback connection: the user that owns
//! the client's socket, as the kernel lists it in `/proc/net/tcp` and
//! `/proc/net/tcp6` (what identd and PostgreSQL's `ident` method read).
//!
//! On loopback `weft dev` needs no token, so that unchanged Render clients
//! (`RENDER_USE_LOCAL_DEV=true`) work for the person who started it. Any
//! other user of the machine reaches the same port, though: the guard
//! refuses them unless they present the API key.

use std::net::{IpAddr, SocketAddr};

/// The uid owning the client socket of the connection `peer` → `local`;
/// `None` when the kernel does not list it (or cannot be read).
pub fn socket_owner(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let table = match peer.ip() {
        IpAddr::V4(_) => "/proc/net/tcp",
        IpAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    owner_in(&text, local, peer)
}

/// Whether this machine lists its sockets' owners where
/// [`socket_owner`] reads them (Linux).
pub fn can_tell_users() -> bool {
    std::fs::metadata("/proc/net/tcp").is_ok()
}

/// The owner of the socket whose own address is `peer` and whose remote
/// address is `local`, in a table of `/proc/net/tcp` lines.
fn owner_in(table: &str, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let (want_local, want_remote) = (kernel_form(peer), kernel_form(local));
    table.lines().skip(1).find_map(|line| {
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
        let mut fields = line.split_whitespace().skip(1);
        if !fields.next()?.eq_ignore_ascii_case(&want_local)
            || !fields.next()?.eq_ignore_ascii_case(&want_remote)
        {
            return None;
        }
        fields.nth(4)?.parse().ok()
    })
}

/// An address as the kernel prints it there: each 32-bit word of the IP
/// in hex, in this machine's byte order, then the port in hex.
fn kernel_form(addr: SocketAddr) -> String {
    let octets: Vec<u8> = match addr.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    let words: String = octets
        .chunks(4)
        .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .collect();
    format!("{words}:{:04X}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_socket_is_found_by_its_two_addresses() {
        let server: SocketAddr = "127.0.0.1:8120".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:51234".parse().unwrap();
        let (s, c) = (kernel_form(server), kernel_form(client));
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {s} 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1\n\
             1: {s} {c} 01 00000000:00000000 00:00000000 00000000  1000        0 2 1\n\
             2: {c} {s} 01 00000000:00000000 00:00000000 00000000    65534        0 3 1\n"
        );
        assert_eq!(owner_in(&table, server, client), Some(65534));
        let other: SocketAddr = "127.0.0.1:51235".parse().unwrap();
        assert_eq!(owner_in(&table, server, other), None);
    }

    #[test]
    fn a_real_connection_is_owned_by_this_user() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_conn, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert_eq!(socket_owner(listener.local_addr().unwrap(), peer), Some(me));
        let v6 = std::net::TcpListener::bind("[::1]:0");
        if let Ok(v6) = v6 {
            let client = std::net::TcpStream::connect(v6.local_addr().unwrap()).unwrap();
            let (_conn, peer) = v6.accept().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            assert_eq!(socket_owner(v6.local_addr().unwrap(), peer), Some(me));
        }
    }
}
