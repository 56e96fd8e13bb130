//! Turning driver errors into messages that say what happened and what to do.

use mysql_async::{DriverError, Error, IoError};

/// The privileges the backup user needs, as a GRANT statement to suggest.
pub const NEEDED_GRANT: &str = "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD, \
     PROCESS, BINLOG MONITOR ON *.* TO <user>";

/// Explain an error that happened while `what` on the server at `addr`.
pub fn explain(e: Error, addr: &str, what: &str) -> anyhow::Error {
    let msg = match &e {
        Error::Server(s) => match s.code {
            1045 => format!(
                "MariaDB at {addr} refused the login: access denied ({}). Check [mariadb] \
                 user/password (or password_env, option_file, zstack_properties)",
                s.message
            ),
            1044 | 1142 | 1143 | 1227 | 1370 | 1141 | 1269 => format!(
                "the backup user lacks a privilege on MariaDB at {addr} while {what}: {} (error \
                 {}). Grant what is missing, e.g. `{NEEDED_GRANT}`, plus SELECT on mysql.* to \
                 back up accounts",
                s.message, s.code
            ),
            1129 | 1130 => format!(
                "MariaDB at {addr} does not accept connections from this host: {}. Allow this \
                 host for the backup user, or connect through the socket",
                s.message
            ),
            1040 => format!(
                "MariaDB at {addr} has too many connections ({}); lower [mariadb] workers or \
                 raise max_connections",
                s.message
            ),
            1412 => format!(
                "a table was altered (DDL) while {what} on {addr}: {}. The snapshot cannot be \
                 consistent; retry the backup",
                s.message
            ),
            1205 => format!(
                "timed out waiting for a lock while {what} on {addr}: {}. A long-running statement \
                 or transaction holds it (see SHOW PROCESSLIST); retry when it is done",
                s.message
            ),
            1927 | 1053 => format!(
                "MariaDB at {addr} closed the connection while {what}: {} (error {}). The server \
                 is shutting down or the connection was killed; retry when it is up",
                s.message, s.code
            ),
            _ => format!(
                "MariaDB at {addr} returned an error while {what}: {} (error {}, SQLSTATE {})",
                s.message, s.code, s.state
            ),
        },
        Error::Io(IoError::Io(io)) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => format!(
                "cannot reach MariaDB at {addr} ({io}) while {what}. Is the server running? Check \
                 [mariadb] host/port/socket"
            ),
            std::io::ErrorKind::TimedOut => format!(
                "MariaDB at {addr} did not answer ({io}) while {what}. Check the address and any \
                 firewall"
            ),
            _ => format!(
                "lost the connection to MariaDB at {addr} while {what} ({io}). The server \
                 stopped, restarted or dropped the connection; nothing was committed — retry when \
                 it is up"
            ),
        },
        Error::Io(IoError::Tls(t)) => format!(
            "TLS with MariaDB at {addr} failed while {what}: {t}. Check [mariadb] tls / tls_ca \
             and the server's certificate"
        ),
        Error::Driver(DriverError::ConnectionClosed) => format!(
            "lost the connection to MariaDB at {addr} while {what}. The server stopped or \
             restarted; nothing was committed — retry when it is up"
        ),
        Error::Driver(DriverError::NoClientSslFlagFromServer) => format!(
            "[mariadb] tls is set but MariaDB at {addr} does not offer TLS; configure ssl on the \
             server or remove tls"
        ),
        _ => format!("MariaDB at {addr}: {e} while {what}"),
    };
    let code = match &e {
        Error::Server(s) => Some(s.code),
        _ => None,
    };
    let transient = is_transient(&e);
    anyhow::Error::new(DbError {
        msg,
        code,
        transient,
    })
}

/// Whether a driver error may go away by retrying later, decided from the server's error code
/// or the I/O error kind (never from message text):
///
/// * the server is busy, restarting or dropped us: too many connections (1040, 1203), shutdown
///   in progress (1053), connection killed (1927), server gone away / lost (2006, 2013), network
///   read/write errors (1158-1161), aborted connection (1152);
/// * the dump met concurrent work: a table changed by DDL during the consistent snapshot
///   (1412), lock wait timeout (1205), deadlock (1213);
/// * the connection failed at the transport: refused, reset, aborted, broken pipe, unexpected
///   end of stream, socket file missing (server restarting), timed out, host or network
///   unreachable; the driver saw the connection close.
///
/// Permanent: access denied, missing privileges, host not allowed, TLS failures, SQL errors.
pub fn is_transient(e: &Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        Error::Server(s) => matches!(
            s.code,
            1040 | 1203 | 1053 | 1927 | 2006 | 2013 | 1152 | 1158..=1161 | 1412 | 1205 | 1213
        ),
        Error::Io(IoError::Io(io)) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::NotFound
                | K::TimedOut
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::NotConnected
        ),
        Error::Io(IoError::Tls(_)) => false,
        Error::Driver(DriverError::ConnectionClosed) => true,
        _ => false,
    }
}

/// MariaDB did not answer a connection attempt within `secs` seconds while `what`: a
/// transient error (the server may be overloaded or restarting).
pub fn connect_timeout(addr: &str, what: &str, secs: u64) -> anyhow::Error {
    anyhow::Error::new(DbError {
        msg: format!(
            "MariaDB at {addr} did not answer within {secs} s while {what}; check [mariadb] \
             host/port/socket and any firewall"
        ),
        code: None,
        transient: true,
    })
}

/// An explained database error: the message says everything (the driver's own text is in it),
/// so it has no source to repeat.
#[derive(Debug)]
pub struct DbError {
    pub msg: String,
    /// The server's error code, when the server answered with an error.
    pub code: Option<u16>,
    /// Worth retrying later (see [`is_transient`]); set where the error is created.
    pub transient: bool,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for DbError {}

/// Whether the error means the connection is gone (server died, killed, shut down).
pub fn is_connection_lost(e: &Error) -> bool {
    match e {
        Error::Io(_) => true,
        Error::Driver(DriverError::ConnectionClosed) => true,
        Error::Server(s) => matches!(s.code, 1927 | 1053 | 2006 | 2013),
        _ => false,
    }
}

/// The server error code inside an error built by [`explain`], if any.
pub fn server_code(e: &anyhow::Error) -> Option<u16> {
    e.downcast_ref::<DbError>().and_then(|d| d.code)
}

/// Whether the error is a missing privilege.
pub fn is_privilege_error(e: &anyhow::Error) -> bool {
    matches!(server_code(e), Some(1044 | 1142 | 1227 | 1370))
}
