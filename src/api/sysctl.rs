//! Kernel parameters a container may set, as the kubelet decides: a name is
//! normalised to dots, must be namespaced (IPC: `kernel.shm*`, `kernel.msg*`,
//! `kernel.sem`, `fs.mqueue.*`; network: `net.*`), and is either on the
//! kubelet's safe list or matched by one of the node's
//! `--allowed-unsafe-sysctls` patterns (`kernel.msg*`). Pure.

/// The kubelet's safe sysctls: namespaced, and with no effect on any other
/// container of the node.
pub const SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The longest name Kubernetes takes.
pub const MAX_LEN: usize = 253;

/// The namespace a sysctl belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// The IPC namespace (rundmc never shares the host's).
    Ipc,
    /// The network namespace.
    Net,
}

/// `net/ipv4/ip_forward` as `net.ipv4.ip_forward`: when the first
/// separator is a slash, slashes and dots swap (a dot in a slashed name is
/// part of a component, such as an interface `eth0.100`), as the kubelet does.
pub fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// Whether `name` (normalised or not) is written as Kubernetes takes it:
/// components of lower-case letters, digits, `-` and `_`, each starting
/// and ending with a letter or digit, separated by `.` or `/`.
pub fn well_formed(name: &str) -> bool {
    let component = |c: &str| {
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let bytes = c.as_bytes();
        !bytes.is_empty()
            && alnum(bytes[0])
            && alnum(bytes[bytes.len() - 1])
            && bytes.iter().all(|&b| alnum(b) || b == b'-' || b == b'_')
    };
    name.len() <= MAX_LEN && name.split(['.', '/']).all(component)
}

/// The namespace of a normalised name; `None` when it is not namespaced
/// (setting it would change the node).
pub fn namespace(name: &str) -> Option<Namespace> {
    if name == "kernel.sem"
        || ["kernel.shm", "kernel.msg", "fs.mqueue."]
            .iter()
            .any(|p| name.starts_with(p))
    {
        return Some(Namespace::Ipc);
    }
    name.starts_with("net.").then_some(Namespace::Net)
}

/// Whether a normalised name is on the safe list.
pub fn is_safe(name: &str) -> bool {
    SAFE.contains(&name)
}

/// Whether `pattern` (a name, or a prefix ending in `*`, with dots or
/// slashes) allows the normalised `name`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let pattern = normalize(pattern);
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Why a `--allowed-unsafe-sysctls` pattern is refused, if it is: it must
/// be well formed and name only namespaced sysctls, as the kubelet checks.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let normal = normalize(pattern);
    let body = normal.strip_suffix('*').unwrap_or(&normal);
    let formed =
        body.is_empty() || well_formed(body) || well_formed(body.trim_end_matches(['.', '/']));
    if !formed || body.contains('*') {
        return Err(format!(
            "{pattern:?} is not a sysctl name or a prefix ending in '*'"
        ));
    }
    match namespace(body).is_some() {
        true => Ok(()),
        false => Err(format!(
            "{pattern:?}: not known to be namespaced (kernel.shm*, kernel.msg*, kernel.sem, \
             fs.mqueue.*, net.*)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_as_the_kubelet_does() {
        assert_eq!(normalize("net/ipv4/ip_forward"), "net.ipv4.ip_forward");
        assert_eq!(
            normalize("net/ipv4/conf/eth0.100/rp_filter"),
            "net.ipv4.conf.eth0/100.rp_filter"
        );
        assert_eq!(
            normalize("kernel.shm_rmid_forced"),
            "kernel.shm_rmid_forced"
        );
        assert!(well_formed("net.ipv4.conf.eth0/100.rp_filter"));
        assert!(!well_formed("net..ipv4"));
        assert!(!well_formed("Net.ipv4"));
        assert!(!well_formed("net.ipv4.x-"));
    }

    #[test]
    fn namespaces_and_the_safe_list() {
        assert_eq!(namespace("kernel.sem"), Some(Namespace::Ipc));
        assert_eq!(namespace("kernel.msgmax"), Some(Namespace::Ipc));
        assert_eq!(namespace("fs.mqueue.msg_max"), Some(Namespace::Ipc));
        assert_eq!(namespace("net.core.somaxconn"), Some(Namespace::Net));
        assert_eq!(namespace("kernel.semx"), None);
        assert_eq!(namespace("vm.swappiness"), None);
        assert_eq!(namespace("kernel.hostname"), None);
        assert!(SAFE.iter().all(|s| namespace(s).is_some()));
        assert!(is_safe("net.ipv4.ip_unprivileged_port_start"));
        assert!(!is_safe("net.core.somaxconn"));
    }

    #[test]
    fn patterns() {
        assert!(matches("kernel.msg*", "kernel.msgmax"));
        assert!(matches("net/core/somaxconn", "net.core.somaxconn"));
        assert!(!matches("kernel.msg*", "kernel.shmmax"));
        assert!(check_pattern("kernel.msg*").is_ok());
        assert!(check_pattern("net.*").is_ok());
        assert!(check_pattern("net.core.somaxconn").is_ok());
        assert!(check_pattern("vm.swappiness").is_err());
        assert!(check_pattern("*").is_err());
        assert!(check_pattern("kernel.*").is_err());
        assert!(check_pattern("net.*.x").is_err());
    }
}
