"""The Internet checksum's ones'-complement sum, written out independently of controller/frames.py,
so tests check the checksums the controller sends: a header (or pseudo-header and segment) whose
checksum is right sums to 0xFFFF."""


def ones_sum(data):
    if len(data) % 2:
        data += b"\x00"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total
