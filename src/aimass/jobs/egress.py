"""Where the server may send a request a caller asked for (a webhook's URL): public addresses
only, unless the operator allows more.

A key that may create a webhook endpoint must not make the server reach what only the server
can reach: its own loopback, the LAN behind it, a cloud's metadata service at 169.254.169.254.
So a destination host is resolved and every address it resolves to must be global (not
loopback, private, link-local, shared, reserved, multicast or unspecified), as GitLab and
Grafana treat webhooks by default. The operator lists what is allowed anyway in
``AIMASS_WEBHOOK_ALLOW`` (comma-separated): host names (``ci.internal``), a domain and every name
under it (``*.corp.example``), addresses and networks (``10.0.0.0/8``, ``127.0.0.1``).

The check is made when an endpoint is created or changed (a clear 400) and again before every
delivery, and the delivery connects to the address that was checked (the URL's host goes in
``Host`` and, over TLS, in SNI and the certificate check), so a name that resolves elsewhere
between the check and the connection (DNS rebinding) reaches nothing new.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlsplit, urlunsplit

from aimass.errors import ConfigError

ENV = "AIMASS_WEBHOOK_ALLOW"
HINT = (
    f"Send to a public address, or have the operator allow this host on the server: "
    f"{ENV}=HOST[,*.DOMAIN,10.0.0.0/8,...] (then restart it)."
)


def _rules() -> tuple[set[str], list[str], list]:
    names, domains, networks = set(), [], []
    for item in os.environ.get(ENV, "").split(","):
        item = item.strip().lower().strip("[]")
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            if item.startswith("*."):
                domains.append(item[1:])
            else:
                names.add(item.rstrip("."))
    return names, domains, networks


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: any embedding, a local network's
COMPATIBLE = ipaddress.ip_network("::/96")  # the deprecated IPv4-compatible addresses


def _inner(address):
    """The IPv4 address an IPv6 one carries to (mapped, 6to4, NAT64, IPv4-compatible, Teredo's
    client), else ``address``: ``[64:ff9b::a9fe:a9fe]`` reaches 169.254.169.254 on a NAT64
    network, and Python calls it global.

    >>> str(_inner(ipaddress.ip_address("2002:7f00:1::")))
    '127.0.0.1'
    >>> str(_inner(ipaddress.ip_address("64:ff9b::a9fe:a9fe")))
    '169.254.169.254'
    """
    if address.version != 6:
        return address
    if address.ipv4_mapped or address.sixtofour:
        return address.ipv4_mapped or address.sixtofour
    if address.teredo:
        return address.teredo[1]
    if address in NAT64 or address in COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _public(address) -> bool:
    if address.version == 6 and address in LOCAL_NAT64:
        return False
    address = _inner(address)
    return address.is_global and not address.is_multicast


def _kind(address) -> str:
    address = _inner(address)
    for name in ("loopback", "link_local", "multicast", "unspecified", "private"):
        if getattr(address, f"is_{name}"):
            return ("an " if name == "unspecified" else "a ") + name.replace("_", "-")
    return "a shared or reserved"


def _resolve(host: str, port: int) -> list:
    """Every address ``host`` resolves to (an address as given is itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(
            f"The host {host!r} does not resolve: {exc}.", hint="Check the URL's host name.", where="url"
        ) from None
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in found))


def check(url: str) -> tuple[str, str]:
    """The address to connect to for ``url`` and the host to name (``Host``, SNI).

    Raises:
        ConfigError: the host does not resolve, or resolves to an address that is not public and
            the operator has not allowed (``where="url"``; the message names the address).
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = _resolve(host, port)
    names, domains, networks = _rules()
    if host in names or any(host.endswith(d) for d in domains):
        return str(addresses[0]), host
    for address in addresses:
        if not _public(address) and not any(address in n for n in networks):
            raise ConfigError(
                f"The URL's host {host!r} is {address}, {_kind(address)} address: the server "
                f"sends webhooks only to public addresses unless its operator allows more.",
                hint=HINT,
                where="url",
            )
    return str(addresses[0]), host


def pinned(url: str) -> tuple[str, dict, dict]:
    """``url`` with its host replaced by the checked address, the ``Host`` header and the
    request extensions (``sni_hostname`` over TLS) that keep naming the original host.

    Raises:
        ConfigError: as :func:`check`.
    """
    address, host = check(url)
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    netloc = literal + (f":{parts.port}" if parts.port else "")
    shown = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), {"host": shown}, extensions
