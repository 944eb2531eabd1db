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


def test_the_count_starts_at_the_request_whose_reply_said_ready_late_or_not():
    sent = [i * 0.01 for i in range(100)]
    # Requests 0-4 unanswered (an ARP resolving); READY came with the reply to #5.
    assert summary(sent, set(range(5, 100)), 0.01, first=5)["lost"] == 0
    # That reply came late (after LATE), so #5 is lost; but it said READY, and the count starts there.
    report = summary(sent, set(range(6, 100)), 0.01, first=5)
    assert (report["sent"], report["received"], report["lost"]) == (95, 94, 1)
    assert report["outages"] == [[0.05, 0.05, 1]]
    # An answer to a request before READY's, arriving after it, counts neither way.
    report = summary(sent, {3} | set(range(5, 100)), 0.01, first=5)
    assert (report["sent"], report["received"], report["lost"]) == (95, 95, 0)
    # No reply at all: every request is lost.
    assert summary(sent, set(), 0.01)["lost"] == 100


def test_the_request_carries_a_valid_checksum():
    packet = echo_request(0x1234, 7)
    assert packet[:2] == b"\x08\x00" and checksum(packet) == 0
