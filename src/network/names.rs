//! What a container with a network of its own is told about names: its
//! `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`, as the kubelet
//! writes them. Pure text in, text out; the one read of the node's files is
//! [`node_resolv_conf_path`], whose choice is the pure [`pick_resolv_conf`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::api::DnsConfig;

/// The most name servers the resolver uses (glibc's MAXNS; the kubelet's
/// limit).
pub const MAX_NAMESERVERS: usize = 3;
/// The most search domains the kubelet writes.
pub const MAX_SEARCHES: usize = 32;
/// The longest search line the kubelet writes, in characters, spaces
/// between domains included.
pub const MAX_SEARCH_CHARS: usize = 2048;
/// A longer search domain makes some resolvers (glibc 2.28) abort; the
/// kubelet leaves it out.
const MAX_DOMAIN_CHARS: usize = 253;

/// The node's resolv.conf, normally.
pub const ETC_RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of the real upstream servers.
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";
/// systemd-resolved's stub, which listens on the node's loopback only and
/// so cannot be reached from a container's own namespace.
const SYSTEMD_STUB: &str = "127.0.0.53";

/// The container's `/etc/hosts`: the kubelet's managed file (localhost for
/// IPv4 and IPv6, the IPv6 multicast names) and `<ip>\t<hostname>` for each
/// of `ips`. An empty hostname gets no line of its own.
pub fn hosts(hostname: &str, ips: &[IpAddr]) -> String {
    let mut out = String::from(
        "# rundmc-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        for ip in ips {
            out.push_str(&format!("{ip}\t{hostname}\n"));
        }
    }
    out
}

/// The container's `/etc/hostname`.
pub fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

/// A resolver configuration: what resolv.conf says, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Resolver {
    nameservers: Vec<String>,
    searches: Vec<String>,
    /// `(name, value)`; a value-less option has `None`.
    options: Vec<(String, Option<String>)>,
}

/// The container's `/etc/resolv.conf` from the node's (`node`, its text) and
/// the spec's `dns`, merged as the kubelet merges a `dnsConfig` under
/// `dnsPolicy: Default`: name servers are the node's then the spec's,
/// without duplicates, at most [`MAX_NAMESERVERS`]; search domains likewise,
/// at most [`MAX_SEARCHES`] and [`MAX_SEARCH_CHARS`] (domains over 253
/// characters left out); options merged by name, the spec's replacing the
/// node's in place. The node's comments, `domain` line and any other line
/// are dropped.
pub fn resolv_conf(node: &str, dns: Option<&DnsConfig>) -> String {
    let mut resolver = parse_resolv_conf(node);
    if let Some(dns) = dns {
        resolver.nameservers.extend(dns.nameservers.iter().cloned());
        resolver.searches.extend(dns.searches.iter().cloned());
        for option in &dns.options {
            let value = option.value.clone().filter(|v| !v.is_empty());
            set_option(&mut resolver.options, &option.name, value);
        }
    }
    resolver.nameservers = without_duplicates(resolver.nameservers);
    resolver.nameservers.truncate(MAX_NAMESERVERS);
    resolver.searches = searches_within_limits(without_duplicates(resolver.searches));
    render(&resolver)
}

/// Which file holds the node's resolver configuration:
/// [`SYSTEMD_RESOLV_CONF`] when `/etc/resolv.conf` names only
/// systemd-resolved's stub and that file exists (as the kubelet is set up on
/// such nodes), else [`ETC_RESOLV_CONF`].
pub fn node_resolv_conf_path() -> PathBuf {
    let etc = std::fs::read_to_string(ETC_RESOLV_CONF).unwrap_or_default();
    pick_resolv_conf(&etc, Path::new(SYSTEMD_RESOLV_CONF).exists())
}

/// [`node_resolv_conf_path`]'s choice, from `/etc/resolv.conf`'s text and
/// whether systemd-resolved's file exists.
pub fn pick_resolv_conf(etc_resolv_conf: &str, systemd_file_exists: bool) -> PathBuf {
    let servers = parse_resolv_conf(etc_resolv_conf).nameservers;
    let stub_only = !servers.is_empty() && servers.iter().all(|s| s == SYSTEMD_STUB);
    match stub_only && systemd_file_exists {
        true => PathBuf::from(SYSTEMD_RESOLV_CONF),
        false => PathBuf::from(ETC_RESOLV_CONF),
    }
}

/// resolv.conf as the kubelet reads it: every `nameserver` accumulates; the
/// last `search` wins (trailing dots dropped, `.` left out); `options`
/// accumulate, a later one of a name replacing an earlier.
fn parse_resolv_conf(text: &str) -> Resolver {
    let mut resolver = Resolver::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with(['#', ';']) {
            continue;
        }
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => resolver.nameservers.extend(fields.next().map(String::from)),
            Some("search") => {
                resolver.searches = fields
                    .filter(|s| *s != ".")
                    .map(|s| s.trim_end_matches('.').to_string())
                    .collect();
            }
            Some("options") => {
                for option in fields {
                    let (name, value) = match option.split_once(':') {
                        Some((n, v)) => (n, Some(v.to_string())),
                        None => (option, None),
                    };
                    set_option(&mut resolver.options, name, value);
                }
            }
            _ => {}
        }
    }
    resolver
}

/// Replace the option called `name` where it is, or append it.
fn set_option(options: &mut Vec<(String, Option<String>)>, name: &str, value: Option<String>) {
    match options.iter_mut().find(|(n, _)| n == name) {
        Some(existing) => existing.1 = value,
        None => options.push((name.to_string(), value)),
    }
}

/// `items` with every repeat after the first left out, in order.
fn without_duplicates(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// The kubelet's cut: the first [`MAX_SEARCHES`], without domains over 253
/// characters, then domains dropped from the end until the line fits in
/// [`MAX_SEARCH_CHARS`].
fn searches_within_limits(mut searches: Vec<String>) -> Vec<String> {
    searches.truncate(MAX_SEARCHES);
    searches.retain(|s| s.len() <= MAX_DOMAIN_CHARS);
    while searches.join(" ").len() > MAX_SEARCH_CHARS {
        searches.pop();
    }
    searches
}

/// The file: `search`, then one `nameserver` line each, then `options`, as
/// containerd's CRI writes it.
fn render(resolver: &Resolver) -> String {
    let mut out = String::new();
    if !resolver.searches.is_empty() {
        out.push_str(&format!("search {}\n", resolver.searches.join(" ")));
    }
    for server in &resolver.nameservers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !resolver.options.is_empty() {
        let options: Vec<String> = resolver
            .options
            .iter()
            .map(|(name, value)| match value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            })
            .collect();
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DnsOption;

    const HEADER: &str = "# rundmc-managed hosts file.\n\
                          127.0.0.1\tlocalhost\n\
                          ::1\tlocalhost ip6-localhost ip6-loopback\n\
                          fe00::0\tip6-localnet\n\
                          fe00::0\tip6-mcastprefix\n\
                          fe00::1\tip6-allnodes\n\
                          fe00::2\tip6-allrouters\n";

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn hosts_files() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("web", &[], ""),
            ("web", &["10.88.0.5"], "10.88.0.5\tweb\n"),
            (
                "web",
                &["10.88.0.5", "fd00::5"],
                "10.88.0.5\tweb\nfd00::5\tweb\n",
            ),
            ("", &["10.88.0.5"], ""),
        ];
        for (hostname, list, tail) in cases {
            assert_eq!(
                hosts(hostname, &ips(list)),
                format!("{HEADER}{tail}"),
                "{hostname} {list:?}"
            );
        }
    }

    #[test]
    fn hostname_file_is_one_line() {
        assert_eq!(hostname_file("web"), "web\n");
    }

    fn option(name: &str, value: Option<&str>) -> DnsOption {
        DnsOption {
            name: name.into(),
            value: value.map(String::from),
        }
    }

    fn dns(nameservers: &[&str], searches: &[&str], options: Vec<DnsOption>) -> DnsConfig {
        DnsConfig {
            nameservers: nameservers.iter().map(|s| s.to_string()).collect(),
            searches: searches.iter().map(|s| s.to_string()).collect(),
            options,
        }
    }

    #[test]
    fn resolv_conf_merges_as_the_kubelet() {
        let node = "# generated\n\
                    ; also a comment\n\
                    domain corp.example\n\
                    search old.example\n\
                    search corp.example. . lab.example\n\
                    nameserver 10.0.0.2\n\
                    nameserver 10.0.0.3\n\
                    options ndots:1 timeout:2\n\
                    options rotate\n\
                    sortlist 130.155.160.0/255.255.240.0\n";
        let cases: Vec<(&str, &str, Option<DnsConfig>, &str)> = vec![
            (
                "node only: comments, domain, sortlist dropped; last search wins",
                node,
                None,
                "search corp.example lab.example\n\
                 nameserver 10.0.0.2\n\
                 nameserver 10.0.0.3\n\
                 options ndots:1 timeout:2 rotate\n",
            ),
            (
                "spec appended, duplicates dropped, options replaced by name",
                node,
                Some(dns(
                    &["10.0.0.3", "1.1.1.1"],
                    &["lab.example", "svc.example"],
                    vec![
                        option("ndots", Some("5")),
                        option("timeout", None),
                        option("edns0", None),
                        option("attempts", Some("")),
                    ],
                )),
                "search corp.example lab.example svc.example\n\
                 nameserver 10.0.0.2\n\
                 nameserver 10.0.0.3\n\
                 nameserver 1.1.1.1\n\
                 options ndots:5 timeout rotate edns0 attempts\n",
            ),
            (
                "at most three name servers, the node's first",
                node,
                Some(dns(&["1.1.1.1", "8.8.8.8"], &[], vec![])),
                "search corp.example lab.example\n\
                 nameserver 10.0.0.2\n\
                 nameserver 10.0.0.3\n\
                 nameserver 1.1.1.1\n\
                 options ndots:1 timeout:2 rotate\n",
            ),
            ("an empty node file and no spec", "", None, ""),
            (
                "spec only",
                "",
                Some(dns(&["10.1.0.10"], &["ns.svc.cluster.local"], vec![])),
                "search ns.svc.cluster.local\nnameserver 10.1.0.10\n",
            ),
        ];
        for (what, node, dns, want) in cases {
            assert_eq!(resolv_conf(node, dns.as_ref()), want, "{what}");
        }
    }

    #[test]
    fn search_domains_are_cut_to_the_kubelets_limits() {
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let out = resolv_conf("", Some(&dns(&[], &refs, vec![])));
        let want: Vec<&str> = refs[..MAX_SEARCHES].to_vec();
        assert_eq!(out, format!("search {}\n", want.join(" ")));

        // 10 domains of 250 characters: 2509 with spaces; 8 fit (2007).
        let long: Vec<String> = (0..10).map(|i| format!("{i}{}", "a".repeat(249))).collect();
        let too_long = format!("{}.example", "b".repeat(250));
        let mut refs: Vec<&str> = vec![too_long.as_str()];
        refs.extend(long.iter().map(String::as_str));
        let out = resolv_conf("", Some(&dns(&[], &refs, vec![])));
        let line = out.strip_prefix("search ").unwrap().trim_end();
        let kept: Vec<&str> = line.split(' ').collect();
        assert_eq!(kept, refs[1..9].to_vec());
        assert!(line.len() <= MAX_SEARCH_CHARS);
    }

    #[test]
    fn the_systemd_file_is_used_only_behind_the_stub() {
        let cases = [
            (
                "nameserver 127.0.0.53\noptions edns0\n",
                true,
                SYSTEMD_RESOLV_CONF,
            ),
            ("nameserver 127.0.0.53\n", false, ETC_RESOLV_CONF),
            (
                "nameserver 127.0.0.53\nnameserver 10.0.0.2\n",
                true,
                ETC_RESOLV_CONF,
            ),
            ("nameserver 10.0.0.2\n", true, ETC_RESOLV_CONF),
            ("# nameserver 127.0.0.53\n", true, ETC_RESOLV_CONF),
            ("", true, ETC_RESOLV_CONF),
        ];
        for (etc, exists, want) in cases {
            assert_eq!(
                pick_resolv_conf(etc, exists),
                PathBuf::from(want),
                "{etc:?} {exists}"
            );
        }
    }
}
