"""Every declaration against the layouts extracted from real VPP builds (sizes, offsets, enums).

The ground truth is vpp-<version>/layouts.json, extracted from VPP's headers: the project's
copy in tests/fixtures, checked equal to ../shared's when that is present.  No number in the
declarations is copied from it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pyvcl.wire import declarations, enums
from pyvcl.wire.mq import PTHREAD_MUTEX_FIELDS
from pyvcl.wire.sapi import ATTACH_N_OPTIONS, SAPI_MSG_SIZE

from .shared_data import has_shared, load_json, own_path

VERSIONS = ["v26.06", "v26.02"]

# C records we deliberately do not declare, and why.
NOT_DECLARED = {
    "app_session_evt_t": "VCL-private helper holding a process-local pointer; never shared",
}

# Our fields that stand for an anonymous C union (checked by offset against the union entry).
UNION_ALIASES = {
    ("app_sapi_msg_t", "payload"): "",
    ("transport_endpt_attr_t", "value"): "",
    ("session_transport_attr_msg_t", "attr.value"): "attr",
    ("session_transport_attr_reply_msg_t", "attr.value"): "attr",
    ("session_event_t", "union_rest"): None,  # tail of the 16-byte union after session_index
}

# Other arms of unions whose bytes another declared field already covers.
OTHER_UNION_ARMS = {
    ("svm_msg_q_msg_t", "as_u64"),  # = ring_index | elt_index << 32
    ("ip46_address_t", "ip6"),
    ("ip46_address_t", "as_u64"),
}

_SCALAR_SIZES = {
    "u8": 1, "i8": 1, "char": 1, "u16": 2, "i16": 2, "short": 2,
    "u32": 4, "i32": 4, "int": 4, "unsigned int": 4, "rb_node_index_t": 4,
    "ssvm_segment_type_t": 4, "transport_endpt_attr_type_t": 4, "tls_verify_cfg_t": 4,
    "u64": 8, "uword": 8, "fs_sptr_t": 8, "session_handle_t": 8, "long": 8,
    "unsigned long long": 8, "long long": 8,
    "union ip46_address_t_": 16,
}  # fmt: skip


def c_type_size(c_type: str) -> int | None:
    t = c_type.removeprefix("volatile ").strip()
    if t.endswith("*"):
        return 8
    m = re.fullmatch(r"(.+?)\[(\d+)\]", t)
    if m:
        inner = c_type_size(m.group(1))
        return None if inner is None else inner * int(m.group(2))
    return _SCALAR_SIZES.get(t)


def layouts(version: str) -> dict[str, Any]:
    where = f"vpp-{version}", "layouts.json"
    data: dict[str, Any] = json.loads(own_path(*where).read_text())
    if has_shared(*where):  # the copy must not drift from the extracted original
        assert data == load_json(*where), f"tests/fixtures/{'/'.join(where)} differs from ../shared"
    return data


@pytest.mark.parametrize("version", VERSIONS)
def test_every_record_is_declared(version: str) -> None:
    records = layouts(version)["records"]
    ours = declarations(version)
    missing = set(records) - set(ours) - set(NOT_DECLARED)
    assert not missing, f"records with no declaration: {sorted(missing)}"


@pytest.mark.parametrize("version", VERSIONS)
def test_sizes_and_offsets(version: str) -> None:
    records = layouts(version)["records"]
    problems: list[str] = []
    for c_name, decl in declarations(version).items():
        if c_name not in records:
            continue
        record = records[c_name]
        if decl.size != record["size"]:
            problems.append(f"{c_name}: size {decl.size} != {record['size']}")
        by_name: dict[str, list[dict[str, Any]]] = {}
        for f in record["fields"]:
            by_name.setdefault(f["name"], []).append(f)
        for name, field in decl.fields.items():
            c_field_name = UNION_ALIASES.get((c_name, name), name)
            if c_field_name is None:
                continue
            candidates = by_name.get(c_field_name, [])
            if not candidates:
                problems.append(f"{c_name}.{name}: no such C field")
                continue
            if all(c["offset"] != field.offset for c in candidates):
                offs = [c["offset"] for c in candidates]
                problems.append(f"{c_name}.{name}: offset {field.offset} != {offs}")
            sizes = {c_type_size(c["type"]) for c in candidates} - {None}
            if c_field_name and sizes and field.size not in sizes:
                problems.append(f"{c_name}.{name}: size {field.size} not in {sizes}")
        # Completeness: every named top-level C field with bytes is declared (or nested).
        for f in record["fields"]:
            if f["depth"] != 0 or not f["name"] or f["type"].endswith("[0]"):
                continue
            n = f["name"]
            if (c_name, n) in OTHER_UNION_ARMS:
                continue
            if n not in decl.fields and not any(k.startswith(n + ".") for k in decl.fields):
                problems.append(f"{c_name}: C field {n} ({f['type']}) not declared")
    assert not problems, "\n".join(problems)


def test_pthread_internals_match_the_mq_header() -> None:
    fields = {
        f["name"]: f for f in layouts("v26.06")["records"]["svm_msg_q_shared_queue_t"]["fields"]
    }
    for name, field in PTHREAD_MUTEX_FIELDS.fields.items():
        assert fields[f"mutex.__data.{name}"]["offset"] == field.offset


@pytest.mark.parametrize("version", VERSIONS)
def test_enum_values(version: str) -> None:
    c_enums = layouts(version)["enums"]
    assert set(c_enums) == set(enums.C_ENUMS)
    for c_name, (py_enum, rule) in enums.C_ENUMS.items():
        ours = {rule(name): int(member) for name, member in py_enum.__members__.items()}
        theirs = c_enums[c_name]
        if version == "v26.02" and c_name == "transport_endpt_attr_type_t":
            # v26.02 lacks TLS_PROFILE_INFO and numbers the rest one lower: see versions.
            assert "TRANSPORT_ENDPT_ATTR_TLS_PROFILE_INFO" not in theirs
            continue
        assert ours == theirs, c_name


def test_constants_agree_with_enums() -> None:
    assert enums.AttachOption.N_OPTIONS == ATTACH_N_OPTIONS
    assert SAPI_MSG_SIZE == 209


def test_fast_codec_round_trips_construct() -> None:
    decl = declarations()["session_accepted_msg_t"]
    raw = decl.build(context=2, handle=5, lcl={"port": 0x611E, "is_ip4": 1}, flags=0x800)
    fast = decl.unpack(raw)
    slow = decl.parse(raw)
    assert fast.context == slow.context == 2
    assert fast.lcl_port == slow.lcl.port == 0x611E
    assert decl["flags"].get(raw) == 0x800
    buf = bytearray(decl.size)
    decl.pack_into(buf, 0, *fast)
    assert bytes(buf) == raw
