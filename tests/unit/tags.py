"""VLAN tags for the property tests: what a container (or the outside) could put on a frame."""
from hypothesis import strategies as st

from flows.model import OFPVID_PRESENT

# vlan_vid of a tagged frame: any VID, and always also VID 0 (a priority tag is still a tag).
TAGGED_VLAN_VIDS = st.one_of(st.just(0), st.integers(0, 4095)).map(lambda vid: OFPVID_PRESENT | vid)
MAYBE_TAGGED = st.none() | TAGGED_VLAN_VIDS  # None: untagged
