"""The one egress guard: which host a URL really connects to, and whether we may connect there.

Every transport (aiohttp for HTTP/1.1, httpcore2 for HTTP/2, SMTP) goes through this module:

1. `canonical_host(host)`: the host exactly as the connecting library will see it. aiohttp builds its request
   from yarl's `URL`, whose host is IDNA/UTS-46 normalised (`①②⑦.0.0.1` and `127。0。0。1` become `127.0.0.1`,
   fullwidth letters fold to ASCII), so we normalise with yarl too and hand the result on, never the raw
   text (a check on `urlsplit(url).hostname` would judge a different host than the one connected to).
2. Numeric forms that are not the canonical dotted quad (`2130706434`, `127.2`, `0x7f.1`, `0177.0.0.1`, or a
   dotted quad spelled with fullwidth dots or circled digits) are refused outright: `getaddrinfo` would turn
   them into addresses nobody reviewing the config would recognise, and no legitimate destination needs them.
3. `resolve_checked(host, port)`: resolve once and check EVERY address (one refused address refuses the host, so
   a name cannot mix a public address with a private one and win a race); the caller connects to the addresses
   returned here, never resolving again.

The policy (`EgressPolicy.permits`): allow-listed networks pass; otherwise an address must be global unicast.
IPv6 forms that embed an IPv4 address are judged by what they reach: IPv4-mapped (`::ffff:a.b.c.d`) by the IPv4
address, 6to4 (`2002::/16`) and Teredo (`2001::/32`) by their embedded IPv4 address, and NAT64
(`64:ff9b::/96`, `64:ff9b:1::/48`) is refused unless allow-listed (it translates to whatever IPv4 it embeds).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import yarl

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# NAT64 prefixes (RFC 6052 well-known prefix, RFC 8215 local-use prefix): the gateway connects to the embedded
# IPv4 address, which may be anything, including our own network.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# A label WHATWG's URL parser reads as a number: decimal, 0x-hex or 0-octal.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
_MAX_CACHED_HOSTS = 4096


class EgressRefused(Exception):
    """The destination may not be connected to. `code` is machine-readable; `reason` names the cause."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class MalformedUrl(Exception):
    """The URL cannot be parsed into a host we could connect to (a configuration error, not a transient one)."""


class NameNotFound(OSError):
    """The name does not resolve (NXDOMAIN or no address): may be fixed by DNS later, so retried."""


class EgressPolicy:
    """Public unicast addresses are fine; everything else needs an allow-list entry."""

    def __init__(self, allow_cidrs: Sequence[str] = ()) -> None:
        self.allowed: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in allow_cidrs
        )
        # address -> verdict: the policy never changes once built, and judging one address walks every network
        # of the allow-list and of ipaddress's special ranges (it showed in send profiles: every send asks)
        self._verdicts: dict[IpAddress, bool] = {}

    def permits(self, address: IpAddress) -> bool:
        verdict = self._verdicts.get(address)
        if verdict is None:
            verdict = self._judge(address)
            if len(self._verdicts) >= _MAX_CACHED_HOSTS:
                self._verdicts.clear()
            self._verdicts[address] = verdict
        return verdict

    def _judge(self, address: IpAddress) -> bool:
        if any(address.version == net.version and address in net for net in self.allowed):
            return True
        return _public(address, self)

    def check_address(self, address: IpAddress, host: str) -> None:
        if not self.permits(address):
            where = str(address) if host == str(address) else f"{host} ({address})"
            raise EgressRefused("egress_denied", f"{where} is {_describe(address)}, not allowed for egress")


def _public(address: IpAddress, policy: EgressPolicy) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return policy.permits(address.ipv4_mapped)
        if any(address in net for net in _NAT64):
            return False
        if address.sixtofour is not None and not policy.permits(address.sixtofour):
            return False
        if address.teredo is not None and not all(policy.permits(v4) for v4 in address.teredo):
            return False
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_unspecified
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_private
    )


def _describe(address: IpAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"an IPv4-mapped form of {address.ipv4_mapped}"
        if any(address in net for net in _NAT64):
            return "a NAT64 address"
        if address.sixtofour is not None or address.teredo is not None:
            return "a 6to4/Teredo address embedding a non-public IPv4 address"
    for attr in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(address, f"is_{attr}"):
            return f"a non-public ({attr.replace('_', '-')}) address"
    return "a non-public address"


@dataclass(frozen=True)
class Destination:
    """A URL's host as the connection will use it: `host` is ASCII (punycode), `address` set for IP literals."""

    host: str
    port: int | None
    address: IpAddress | None
    url: yarl.URL


@functools.lru_cache(maxsize=_MAX_CACHED_HOSTS)  # hosts come from configs; parsing showed in profiles
def canonical_host(raw_host: str) -> tuple[str, IpAddress | None]:
    """(the host as connected to, its address if it is an IP literal); EgressRefused for disguised numbers."""
    text = raw_host.strip()
    bracketed = text.startswith("[") and text.endswith("]")
    if bracketed:
        try:
            return str(ipaddress.IPv6Address(text[1:-1])), ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise MalformedUrl("the bracketed host is not an IPv6 address") from None
    try:
        host = yarl.URL.build(scheme="http", host=text).raw_host or ""
    except (ValueError, UnicodeError):
        raise MalformedUrl("the host is not a valid DNS name or IP address") from None
    host = host.removesuffix(".")  # the root label: "example.com." is "example.com"
    if not host:
        raise MalformedUrl("the URL has no host")
    if ":" in host:  # yarl already turned an IPv6 literal into its compressed form
        try:
            return host, ipaddress.IPv6Address(host)
        except ValueError:
            raise MalformedUrl("the host is not a valid IPv6 address") from None
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise EgressRefused(
                "egress_denied", "the host is a non-canonical numeric address (write it as a.b.c.d)"
            ) from None
        if text.lower().rstrip(".") != host:
            # The quad was written with other digits or dots (circled digits, ideographic dots): refuse the disguise itself.
            raise EgressRefused(
                "egress_denied",
                "the host is a numeric address in a non-canonical spelling (write it as a.b.c.d)",
            )
        return host, address
    return host, None


@functools.lru_cache(maxsize=_MAX_CACHED_HOSTS)  # URLs come from configs: parsed once, not on every send
def destination(url: str) -> Destination:
    """Parse `url` and canonicalise its host; MalformedUrl or EgressRefused (disguised numbers) on failure."""
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError, UnicodeError):
        raise MalformedUrl("the URL cannot be parsed") from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise MalformedUrl("the URL must be http(s)://host/...")
    try:
        port = parsed.port
    except ValueError:
        raise MalformedUrl("the URL's port is not a number") from None
    # The raw text of the host as written, for the disguise check (yarl has already normalised raw_host).
    written = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
    if written.startswith("["):
        written = written.split("]", 1)[0] + "]"
    elif ":" in written:
        written = written.rsplit(":", 1)[0]
    host, address = canonical_host(written)
    return Destination(host, port, address, parsed)


def check_url(url: str, policy: EgressPolicy) -> Destination:
    """What can be judged without DNS: the URL parses, its host is canonical, an IP literal is permitted."""
    dest = destination(url)
    if dest.address is not None:
        policy.check_address(dest.address, dest.host)
    return dest


#: the pydantic validation-context key under which the API passes its allow-list when it validates input
ALLOW_CIDRS_CONTEXT = "egress_allow_cidrs"


def check_config_url(url: str, context: object = None) -> str:
    """For config validators: `url`, or a ValueError saying (machine-readably) why it is refused at save time.

    Always refused: a malformed URL (`invalid_url`), a numeric host in a non-canonical form (`egress_denied`:
    `http://169。254。169。254/`, `http://2130706434/`). Refused when the validation context carries the allow-list
    (`{ALLOW_CIDRS_CONTEXT: [...]}`, which the API passes for input): an IP literal the policy refuses. Stored
    configs are validated without it, so a narrowed allow-list shows up as `egress_denied` on the send (with the
    delivery's reason) rather than as an unreadable config. Names are not resolved here (DNS can change before
    the send, which checks again)."""
    allow = context.get(ALLOW_CIDRS_CONTEXT) if isinstance(context, dict) else None
    try:
        dest = destination(url)
        if allow is not None and dest.address is not None:
            EgressPolicy(allow).check_address(dest.address, dest.host)
    except MalformedUrl as exc:
        raise ValueError(f"invalid_url: {exc}") from None
    except EgressRefused as exc:
        raise ValueError(f"{exc.code}: {exc.reason}") from None
    return url


def check_config_host(host: str, context: object = None) -> str:
    """`check_config_url` for a bare host name (SMTP): returns the canonical host."""
    check_config_url(f"http://{host if ':' not in host or host.startswith('[') else f'[{host}]'}/", context)
    return canonical_host(host)[0]


async def resolve_checked(
    host: str, port: int, policy: EgressPolicy, *, family: int = socket.AF_UNSPEC
) -> list[tuple[int, IpAddress]]:
    """(family, address) for every address of a canonical `host`, all of them permitted; else EgressRefused.

    `host` must come from `canonical_host` (an IP literal is checked without DNS). NameNotFound when the name
    has no address, OSError for other resolver failures."""
    try:
        literal: IpAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        policy.check_address(literal, host)
        return [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, literal)]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise NameNotFound(exc.errno, f"{host}: {exc.strerror}") from None
        raise
    found: list[tuple[int, IpAddress]] = []
    for fam, _, _, _, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        policy.check_address(address, host)
        if (fam, address) not in found:
            found.append((fam, address))
    if not found:
        raise NameNotFound(socket.EAI_NONAME, f"{host}: no address")
    return found


__all__ = [
    "ALLOW_CIDRS_CONTEXT",
    "Destination",
    "EgressPolicy",
    "EgressRefused",
    "MalformedUrl",
    "NameNotFound",
    "canonical_host",
    "check_config_host",
    "check_config_url",
    "check_url",
    "destination",
    "resolve_checked",
]
