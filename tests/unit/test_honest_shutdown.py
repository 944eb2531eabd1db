"""At SIGTERM the HTTP front refuses new requests with a 503 that says nothing was done (so a client
may retry, on the other controller too), and waits of requests in flight answer at once."""
import io
import json
import threading
import time

from controller.http import HostCheck, HttpFront, Peer


def request(front, method, path, body=b""):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "HTTP_HOST": "localhost",
               "weft.peer": Peer("unix", "0"), "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    answer = {}
    data = b"".join(front(environ, lambda status, headers: answer.update(status=int(status.split()[0]))))
    return answer["status"], json.loads(data)


def test_a_stopping_front_refuses_with_nothing_done_and_retry(api):
    front = HttpFront(api, None, {"unix": HostCheck("unix")})
    assert request(front, "POST", "/v1/networks", b'{"name": "blue", "cidr": "10.0.0.0/24"}')[0] == 201
    front.stopping = True
    status, body = request(front, "POST", "/v1/networks", b'{"name": "green", "cidr": "10.1.0.0/24"}')
    assert (status, body["retry"]) == (503, True) and "shutting down: nothing was done" in body["error"]
    assert "green" not in api.core.nb_state().networks


def test_a_wait_in_flight_answers_at_once_when_the_controller_stops(api):
    front = HttpFront(api, None, {"unix": HostCheck("unix")})
    assert request(front, "POST", "/v1/networks", b'{"name": "blue", "cidr": "10.0.0.0/24"}')[0] == 201
    assert request(front, "POST", "/v1/ports", b'{"name": "p1", "network": "blue"}')[0] == 201
    answered = {}

    def wait():
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/ports/p1", "QUERY_STRING": "wait_up=30",
                   "HTTP_HOST": "localhost", "weft.peer": Peer("unix", "0")}
        data = b"".join(front(environ, lambda status, headers: answered.update(status=int(status.split()[0]))))
        answered["body"] = json.loads(data)
    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    assert front.requests_in_flight() == 1
    started = time.monotonic()
    api.core.stop_waiting()
    thread.join(5)
    assert time.monotonic() - started < 2
    assert answered["status"] == 200 and answered["body"]["up"] is False
