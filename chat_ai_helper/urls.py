"""One reading of a base URL: the origin that a request really connects to.

A key is chosen for the host of the base URL, so the host we read must be
the host the HTTP library connects to.  Rather than hope that two URL
parsers agree, a base URL is read here once, strictly: anything that
parsers are known to read differently (user info, backslashes, spaces,
control or non-ASCII characters, odd ports) is refused with one line,
and what is left is checked against urllib3's own reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from chat_ai_helper.errors import ConfigError

DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\Z")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
LOOPBACK_HOSTS = ("localhost", "::1")


@dataclass(frozen=True)
class Origin:
    """Where a request connects: scheme, host (lower case) and port."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        """Return the origin as a URL prefix, the port only when not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if DEFAULT_PORTS[self.scheme] == self.port:
            return f"{self.scheme}://{host}"
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """Return whether the origin is on this machine."""
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")


def origin(url: object, name: str = "base_url") -> Origin:
    """Return the origin of base URL URL, or refuse it in one line naming NAME."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{name} must be an http:// or https:// address", name)
    if any(not 0x21 <= ord(char) <= 0x7E for char in url):
        raise ConfigError(
            f"{name} must be one plain ASCII address, without spaces or control "
            "characters (percent-encode them)",
            name,
        )
    if "\\" in url:
        raise ConfigError(
            f"{name} must not contain a backslash: programs disagree on which "
            "host such an address names",
            name,
        )
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ConfigError(
            f"{name} {url} has no scheme; write it as https://{url} "
            "(or http:// for a server without TLS)",
            name,
        )
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(
            f"{name} must be an http:// or https:// address, not {scheme}://", name
        )
    if "?" in rest or "#" in rest:
        raise ConfigError(f"{name} must not have a query (?…) or a fragment (#…)", name)
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        raise ConfigError(
            f"{name} must not carry a user name or password (user@host); "
            "give the key with :api-key or auth-source instead",
            name,
        )
    host, port = _host_and_port(authority, name)
    found = Origin(scheme, host, port or DEFAULT_PORTS[scheme])
    _check_agreement(url, found, name)
    return found


def _host_and_port(authority: str, name: str) -> tuple[str, int | None]:
    if authority.startswith("["):
        host, _, port_text = authority.partition("]")
        host += "]"
        if port_text and not port_text.startswith(":"):
            raise ConfigError(f"{name} has a malformed host: {authority}", name)
        port_text = port_text[1:]
        well_formed = _IPV6.match(host) is not None
    else:
        host, _, port_text = authority.partition(":")
        well_formed = _NAME.match(host) is not None
    if not host:
        raise ConfigError(f"{name} has no host", name)
    if not well_formed:
        raise ConfigError(f"{name} has a malformed host: {host}", name)
    port = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(
                f"{name} has a malformed port: {port_text} (1 to 65535)", name
            )
        port = int(port_text)
    return host.strip("[]").lower(), port


def _check_agreement(url: str, found: Origin, name: str) -> None:
    """Refuse URL unless urllib3 and urllib read the same origin as FOUND."""
    from urllib3.util import parse_url

    parsed = parse_url(url)
    split = urlsplit(url)
    readings = {
        (
            (parsed.host or "").strip("[]").lower(),
            parsed.port or DEFAULT_PORTS.get(parsed.scheme or "", 0),
        ),
        (
            (split.hostname or "").lower(),
            split.port or DEFAULT_PORTS.get(split.scheme, 0),
        ),
    }
    if readings != {(found.host, found.port)}:
        raise ConfigError(
            f"{name} is read as different hosts by different programs; "
            "write it plainly",
            name,
        )
