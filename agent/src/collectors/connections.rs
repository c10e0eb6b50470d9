//! Established TCP connections to the etcd client port (the member's side of them), from
//! `/proc/net/tcp` and `/proc/net/tcp6`.

use procfs::net::TcpState;

pub fn collect(client_port: u16) -> Result<u64, String> {
    let mut n = 0u64;
    for (table, read) in [
        (
            "/proc/net/tcp",
            procfs::net::tcp as fn() -> procfs::ProcResult<_>,
        ),
        ("/proc/net/tcp6", procfs::net::tcp6),
    ] {
        match read() {
            Ok(entries) => {
                n += entries
                    .iter()
                    .filter(|e| {
                        e.state == TcpState::Established && e.local_address.port() == client_port
                    })
                    .count() as u64;
            }
            // A kernel without IPv6 has no tcp6 table.
            Err(_) if table.ends_with('6') => {}
            Err(e) => return Err(format!("{table}: {e}")),
        }
    }
    Ok(n)
}
