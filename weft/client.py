"""A small JSON client for Weft's REST API (standard library only, so the CLI starts fast)."""
import json
import os
import urllib.error
import urllib.request

DEFAULT_API = "http://127.0.0.1:8080"


def default_api():
    return os.environ.get("WEFT_API") or DEFAULT_API


class ApiError(Exception):
    """The API answered with an error, or could not be reached. `status` is None when unreachable."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class ApiClient:
    def __init__(self, base=None, timeout=30.0):
        self.base = (base or default_api()).rstrip("/")
        self.timeout = timeout

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, _error_message(err.read(), err.reason)) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ApiError(None, f"cannot reach the Weft API at {self.base}: {reason}") from None
        return json.loads(raw) if raw else None

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body):
        return self.request("POST", path, body)

    def delete(self, path):
        return self.request("DELETE", path)


def _error_message(raw, fallback):
    try:
        return json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace").strip() or str(fallback)
