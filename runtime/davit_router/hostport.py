"""`host:port` for an address, IPv6 bracketed. The standard library only: the operator's image
(which carries this package's source but not the router's dependencies) uses it for the router
pods' admin addresses."""

from __future__ import annotations

import ipaddress


def host_port(address: str, port: int) -> str:
    """`address:port`, an IPv6 address bracketed (`[fd00::1]:8080`) so the port stays apart."""
    try:
        is_v6 = ipaddress.ip_address(address).version == 6
    except ValueError:  # an FQDN slice's name
        is_v6 = False
    return f"[{address}]:{port}" if is_v6 else f"{address}:{port}"
