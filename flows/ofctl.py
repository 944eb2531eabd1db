"""Flows as ovs-ofctl text (debugging, golden tests) and cookies read back from real dumps."""
from __future__ import annotations

import re
from collections import Counter

from flows.model import CT_FLAGS, FIELD_BITS, IPV4_FIELDS, MAC_FIELDS, Flow
from flows.pipeline import OFPP_IN_PORT

# ovs-ofctl spells some fields differently from Ryu.
_OFCTL_NAMES = {
    "eth_src": "dl_src", "eth_dst": "dl_dst", "eth_type": "dl_type", "ip_proto": "nw_proto",
    "ipv4_src": "nw_src", "ipv4_dst": "nw_dst", "tunnel_id": "tun_id", "tun_ipv4_dst": "tun_dst",
    "icmpv4_type": "icmp_type", "icmpv4_code": "icmp_code", "vlan_vid": "vlan_tci",
}
# move: ovs-ofctl prints NXM names there.
_NXM_NAMES = {
    "eth_src": "NXM_OF_ETH_SRC", "eth_dst": "NXM_OF_ETH_DST", "arp_sha": "NXM_NX_ARP_SHA",
    "arp_tha": "NXM_NX_ARP_THA", "arp_spa": "NXM_OF_ARP_SPA", "arp_tpa": "NXM_OF_ARP_TPA",
    "ipv4_src": "NXM_OF_IP_SRC", "ipv4_dst": "NXM_OF_IP_DST", "tunnel_id": "NXM_NX_TUN_ID",
    "metadata": "OXM_OF_METADATA", **{f"reg{i}": f"NXM_NX_REG{i}" for i in range(16)},
}
# Fields printed in decimal, as ovs-ofctl does; the rest (keys, registers, types) in hex.
_DECIMAL = frozenset({"in_port", "arp_op", "ip_proto", "nw_ttl", "icmpv4_type", "icmpv4_code",
                      "tcp_src", "tcp_dst", "udp_src", "udp_dst", "ct_zone"})



def _name(field: str) -> str:
    return _OFCTL_NAMES.get(field, field)


def _ct_state(value: int, mask: int) -> str:
    """(value, mask) as ovs-ofctl flags, e.g. +new+trk; a bit in the mask but not set is -."""
    return "".join(("+" if value & bit else "-") + name for name, bit in CT_FLAGS if mask & bit)


def _value(field: str, value) -> str:
    if field == "ct_state":
        return _ct_state(*value) if isinstance(value, tuple) else _ct_state(value, 0xFF)
    if field == "vlan_vid":  # OVS shows it as the tag's TCI bits it covers (its exact-VID form,
        # dl_vlan=N, is not used by the compiler)
        vid, mask = value if isinstance(value, tuple) else (value, (1 << FIELD_BITS[field]) - 1)
        return f"0x{vid:04x}/0x{mask:04x}"
    if isinstance(value, tuple):
        return f"{_value(field, value[0])}/{_value(field, value[1])}"
    if field in MAC_FIELDS or field in IPV4_FIELDS or field in _DECIMAL:
        return str(value)
    if field == "eth_type":
        return f"0x{value:04x}"
    return hex(value)


def _port(port: int) -> str:
    return "IN_PORT" if port == OFPP_IN_PORT else str(port)


def _action(action: tuple) -> str:
    kind = action[0]
    if kind == "output":
        return f"output:{_port(action[1])}"
    if kind == "set_field":
        return f"set_field:{_value(action[1], action[2])}->{_name(action[1])}"
    if kind == "move":
        _, src, dst, n_bits = action
        bits = lambda f: "[]" if n_bits == FIELD_BITS[f] else f"[0..{n_bits - 1}]"  # noqa: E731
        return f"move:{_NXM_NAMES[src]}{bits(src)}->{_NXM_NAMES[dst]}{bits(dst)}"
    if kind in ("push", "pop"):
        return f"{kind}:{_NXM_NAMES[action[1]]}[]"
    if kind == "dec_ttl":
        return "dec_ttl"
    if kind == "ct":
        _, commit, zone, table, nat = action
        args = ["commit"] if commit else []
        args.append(f"zone={zone}")
        if table is not None:
            args.append(f"table={table}")
        if nat is not None:
            kind_to_arg = {"snat": "src", "dnat": "dst"}
            args.append("nat" if nat[0] == "nat" else f"nat({kind_to_arg[nat[0]]}={nat[1]})")
        return f"ct({','.join(args)})"
    if kind == "controller":
        return "CONTROLLER:65535"
    if kind == "goto":
        return f"goto_table:{action[1]}"
    raise ValueError(f"unknown action {action!r}")


def to_ofctl(flow: Flow) -> str:
    """E.g. 'table=90, priority=100, cookie=0x40000000001, dl_dst=..,metadata=0x64,
    actions=set_field:0x1->reg15,goto_table:110'."""
    parts = [f"table={flow.table}", f"priority={flow.priority}", f"cookie={flow.cookie:#x}"]
    if flow.match:
        parts.append(",".join(f"{_name(f)}={_value(f, v)}" for f, v in flow.match))
    actions = ",".join(_action(a) for a in flow.actions) or "drop"
    parts.append(f"actions={actions}")
    return ", ".join(parts)


_COOKIE = re.compile(r"\bcookie=(0x[0-9a-fA-F]+|\d+)")


def parse_dump_cookies(text: str) -> Counter[int]:
    """Count flows per cookie in `ovs-ofctl dump-flows` output (header lines are skipped)."""
    counts: Counter[int] = Counter()
    for line in text.splitlines():
        match = _COOKIE.search(line)
        if match and "actions=" in line:
            counts[int(match.group(1), 0)] += 1
    return counts
