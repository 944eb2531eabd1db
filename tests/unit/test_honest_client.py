"""The client and the CLI when the controller goes away after a write was sent, before answering:
not a failure but an unknown outcome, naming the write and how to check it; a read is asked again."""
import socket
import threading

from weft import cli
from weft.client import ApiClient, ApiError


def read_request(conn):
    """The whole request, body included: hanging up before the client has sent all of it would make
    its send fail (a broken pipe), which is another case (nothing was received)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return data


def vanishing_server(path, answer_after=None):
    """A unix socket that reads each request and hangs up without answering; from the
    `answer_after`-th connection on it answers 200 [] instead. Returns the list of requests seen."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(4)
    seen = []

    def serve():
        while True:
            conn, _ = listener.accept()
            seen.append(read_request(conn).split(b"\r\n")[0].decode())
            if answer_after is not None and len(seen) >= answer_after:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]")
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return seen


def test_a_write_the_controller_never_answered_is_of_unknown_outcome(tmp_path):
    sock = str(tmp_path / "api.sock")
    vanishing_server(sock)
    client = ApiClient(f"unix:{sock}", timeout=5)
    try:
        client.post("/v1/ports", {"name": "web-1", "network": "blue"})
        raise AssertionError("no error")
    except ApiError as err:
        assert err.details == {"outcome": "unknown", "name": "web-1"}
        assert err.message == ("the controller went away before answering: whether creating port web-1 happened "
                               "is unknown; check with `weft port show web-1` before trying again")


def test_the_cli_says_unknown_outcome_not_error(tmp_path, capsys):
    sock = str(tmp_path / "api.sock")
    vanishing_server(sock)
    status = cli.main(["--api", f"unix:{sock}", "network", "delete", "blue"])
    err = capsys.readouterr().err
    assert status == cli.OUTCOME_UNKNOWN
    assert err.startswith("weft: outcome unknown: the controller went away before answering: whether deleting "
                          "network blue happened is unknown; check with `weft network show blue`")


def test_a_read_the_controller_dropped_is_asked_again(tmp_path):
    sock = str(tmp_path / "api.sock")
    seen = vanishing_server(sock, answer_after=2)
    assert ApiClient(f"unix:{sock}", timeout=5).get("/v1/ports") == []
    assert seen == ["GET /v1/ports HTTP/1.1"] * 2
