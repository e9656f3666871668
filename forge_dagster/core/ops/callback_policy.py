"""Where a job's callback may point: the policy the relay applies to every stamp, and intake's early check.

A `callback_url` comes from whoever submits work (an intake line, a row another application inserted, a
client call), and the relay POSTs from inside the deployment: left open, a job could make Forge knock on
cloud metadata (169.254.169.254), its own PostgreSQL or Dagster webserver, or any private address. So,
by default, an address is refused when it is loopback, link-local, private, unique-local, shared (CGNAT),
multicast, unspecified, reserved or otherwise not globally routable, including the IPv4-mapped, 6to4 and
NAT64 forms of any of those. `FORGE_CALLBACK_ALLOW` opens exactly what the operator names (comma or space
separated): a host (`hooks.internal`), a domain with a wildcard (`*.corp.example`, its subdomains), or an
address or CIDR (`127.0.0.1`, `10.20.0.0/16`). `FORGE_CALLBACK_HTTPS_ONLY=1` refuses plain http.

The relay resolves the host itself (`resolve_checked`), requires every address to be allowed and then
connects to one of those very addresses (core/ops/stamps.py), so a DNS answer that changes between the check
and the connection cannot redirect the POST. Intake refuses what needs no lookup (`intake_problem`): a
literal address or a `localhost` name that is not allowed, a scheme the policy refuses.

The Slack webhook is not under this policy: the operator configures it, a job cannot name it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from forge_dagster.core.config import load_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses it resolves to (as text). The relay's default asks the system resolver.
Resolver = Callable[[str, int], list[str]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
_SHORTHAND_V4 = re.compile(r"\A(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}\Z", re.IGNORECASE)


class CallbackRefused(Exception):
    """A callback destination the policy refuses: permanent, never retried."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host:port, in its order, once each."""
    found: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if sockaddr[0] not in found:
            found.append(sockaddr[0])
    return found


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address when it is one, including the shorthand IPv4 forms a resolver accepts
    (`127.1`, `2130706433`, `0x7f.0.0.1`), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if _SHORTHAND_V4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refused_kind(address: IPAddress) -> str | None:
    """Why `address` is refused by default (its kind), or None for a globally routable one."""
    inner = embedded_ipv4(address)
    if inner is not None:
        kind = refused_kind(inner)
        if kind:
            form = "IPv4-mapped" if address.ipv4_mapped is not None else "embedded"
            return f"{kind} ({form} form of {inner})"
    checks = (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("unique-local", isinstance(address, ipaddress.IPv6Address) and address in _UNIQUE_LOCAL),
              ("shared (carrier-grade NAT)", isinstance(address, ipaddress.IPv4Address) and address in _SHARED),
              ("private", address.is_private), ("reserved", address.is_reserved),
              ("not globally routable", not address.is_global))
    return next((kind for kind, hit in checks if hit), None)



@dataclass(frozen=True)
class CallbackPolicy:
    """What the operator opened (`FORGE_CALLBACK_ALLOW`) and whether plain http is refused."""

    hosts: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()  # ".corp.example" for "*.corp.example"
    networks: tuple[IPNetwork, ...] = ()
    https_only: bool = False

    @classmethod
    def parse(cls, allow: str | Iterable[str] | None, *, https_only: bool = False) -> CallbackPolicy:
        """A policy from the allow-list text (entries separated by commas or spaces). ValueError names
        an entry that is neither a host, a `*.domain` nor an address or CIDR."""
        entries = re.split(r"[\s,]+", allow) if isinstance(allow, str) else list(allow or ())
        hosts, domains, networks = set(), [], []
        for entry in (e.strip().lower().rstrip(".") for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry[2:] if entry.startswith("*.") else entry
            if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*", name):
                raise ValueError(f"FORGE_CALLBACK_ALLOW: {entry!r} is not a host, *.domain, address or CIDR")
            if entry.startswith("*."):
                domains.append("." + name)
            else:
                hosts.add(name)
        return cls(frozenset(hosts), tuple(domains), tuple(networks), https_only)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> CallbackPolicy:
        """The policy `FORGE_CALLBACK_ALLOW` and `FORGE_CALLBACK_HTTPS_ONLY` describe (in the settings, or
        in `environ` alone when given)."""
        settings = load_settings(environ)
        return cls.parse(settings.callback_allow, https_only=settings.callback_https_only)

    def describe(self) -> str:
        """One line for the operator: what is open beyond public addresses."""
        opened = sorted(self.hosts) + ["*" + d for d in self.domains] + [str(n) for n in self.networks]
        text = "public addresses" + (f" and {', '.join(opened)}" if opened else " only")
        return text + (", https only" if self.https_only else "")

    def names_host(self, host: str) -> bool:
        """Did the operator open this host by name (exactly, or under a wildcard domain)?"""
        host = host.lower().rstrip(".")
        return host in self.hosts or any(host.endswith(d) for d in self.domains)

    def address_problem(self, address: IPAddress) -> str | None:
        """Why a connection to `address` is refused, or None when the policy allows it."""
        candidates = [address] + ([inner] if (inner := embedded_ipv4(address)) is not None else [])
        if any(a.version == n.version and a in n for a in candidates for n in self.networks):
            return None
        kind = refused_kind(address)
        return f"{address} is {kind} (refused unless FORGE_CALLBACK_ALLOW opens it)" if kind else None

    def scheme_problem(self, url: str) -> str | None:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            return f"callback_url must be http(s), got {scheme or 'no scheme'}"
        if self.https_only and scheme != "https":
            return "callback_url must be https (FORGE_CALLBACK_HTTPS_ONLY is set)"
        return None

    def intake_problem(self, url: str) -> str | None:
        """What intake can refuse without a lookup: a refused scheme, a literal address or a `localhost`
        name the policy does not allow. None when only the relay's resolution can tell."""
        try:
            host = (urlsplit(url).hostname or "").rstrip(".")
        except ValueError:
            return "callback_url is not a URL"
        problem = self.scheme_problem(url)
        if problem or self.names_host(host):
            return problem
        address = literal_address(host)
        if address is not None:
            refused = self.address_problem(address)
            return f"callback_url refused: {refused}" if refused else None
        if host == "localhost" or host.endswith(".localhost"):
            return f"callback_url refused: {host} is loopback (refused unless FORGE_CALLBACK_ALLOW opens it)"
        return None

    def resolve_checked(self, host: str, port: int, resolver: Resolver) -> list[str]:
        """The addresses to connect to for host:port, every one of them allowed. A host the operator
        named is trusted with whatever it resolves to. Raises CallbackRefused naming the first address
        refused (the whole answer is refused: a resolver may hand out its addresses in any order);
        OSError when the name does not resolve."""
        literal = literal_address(host)
        if literal is not None:
            answers = [literal]
        else:
            answers = [ipaddress.ip_address(a.split("%")[0]) for a in resolver(host, port)]
            if not answers:
                raise OSError(f"{host} resolved to no address")
        if literal is None and self.names_host(host):
            return [str(a) for a in answers]
        for address in answers:
            problem = self.address_problem(address)
            if problem:
                via = "" if literal is not None else f"{host} resolves to "
                raise CallbackRefused(f"callback refused: {via}{problem}")
        return [str(a) for a in answers]
