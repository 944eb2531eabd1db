"""The pipeline declaration: tables, cookies, and the generated docs page."""
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from flows import docgen
from flows.compiler import compile_all
from flows.examples import scale_topology
from flows.model import Flow
from flows.pipeline import (COOKIE_OBJECT_MASK, DROP, TABLES, Category, make_cookie,
                            parse_cookie)

ROOT = Path(__file__).resolve().parents[2]


def test_tables_are_ordered_and_unique():
    # (flows name stages, not ids, so a new stage needs no gap to slot in)
    ids = [t.id for t in TABLES]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert len({t.name for t in TABLES}) == len(TABLES)
    assert all(t.miss == DROP for t in TABLES)
    names = {t.name for t in TABLES}
    assert all(t.next in names for t in TABLES if t.next)  # `proceed` leads somewhere real


def test_reserved_tables_have_no_flows_yet():
    reserved = {t.id for t in TABLES if t.reserved_for}
    for host_flows in compile_all(scale_topology(3, 5, 2)).values():
        for entries in host_flows.values():
            flows = [f for f in entries if isinstance(f, Flow)]
            assert not {f.table for f in flows} & reserved
            for f in flows:  # every goto names a declared, non-reserved stage
                assert all(a[1] in {t.name for t in TABLES if not t.reserved_for}
                           for a in f.actions if a[0] == "goto")
                assert all(a[0] != "goto" for a in f.actions[:-1])  # goto only last


@given(st.integers(0, 2**16 - 1), st.sampled_from(list(Category)), st.integers(0, 2**40 - 1))
def test_cookie_round_trip(round_, category, key):
    cookie = make_cookie(category, key, round_)
    assert parse_cookie(cookie) == (round_, category, key)
    assert cookie & COOKIE_OBJECT_MASK == make_cookie(category, key)
    assert 0 <= cookie < 2**64


def test_cookie_layout():
    assert make_cookie(Category.PORT, 1) == 0x0000_0400_0000_0001
    assert make_cookie(Category.STATIC, 0, round=3) == 0x0003_0100_0000_0000
    for bad in ((Category.PORT, 2**40), (256, 1), (Category.PORT, -1)):
        with pytest.raises(ValueError):
            make_cookie(*bad)
    with pytest.raises(ValueError):
        make_cookie(Category.PORT, 1, round=2**16)


def test_docs_page_is_generated_from_the_code():
    # On failure: python3 -m flows.docgen > docs/pipeline.md
    assert (ROOT / "docs" / "pipeline.md").read_text() == docgen.generate()
