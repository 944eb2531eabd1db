"""The echo counter's report (weft/echo.py), from the sends and the answers it saw."""
from weft.echo import checksum, echo_request, summary


def test_no_loss_reports_no_outage_and_no_gap():
    sent = [i * 0.01 for i in range(100)]
    assert summary(sent, set(range(100)), 0.01) == {"sent": 100, "received": 100, "lost": 0,
                                                    "longest_gap_ms": 0.0, "outages": []}


def test_losses_are_grouped_into_outages_and_the_longest_gap_is_between_answers():
    sent = [i * 0.01 for i in range(100)]
    answered = set(range(100)) - set(range(10, 30)) - {50}
    report = summary(sent, answered, 0.01)
    assert report["lost"] == 21 and report["received"] == 79
    assert report["outages"] == [[0.1, 0.29, 20], [0.5, 0.5, 1]]
    assert report["longest_gap_ms"] == 200.0  # from the answer to #9 to the one to #30, less one interval


def test_the_request_carries_a_valid_checksum():
    packet = echo_request(0x1234, 7)
    assert packet[:2] == b"\x08\x00" and checksum(packet) == 0
