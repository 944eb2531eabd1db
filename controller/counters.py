"""Event counts for the controller's lifetime, by name and labels: what /metrics exports as
`weft_<name>_total`. They live in the core, not in the objects that count (a HostFlowSync is replaced
on every switch reconnect, and a counter that falls back to 0 would read as a reset)."""
import collections


class Counters:
    def __init__(self):
        self._values = collections.Counter()

    def inc(self, name, amount=1, **labels):
        """Adds `amount` to counter `name` with these labels (say host="h1")."""
        self._values[(name, tuple(sorted(labels.items())))] += amount

    def get(self, name, **labels):
        return self._values.get((name, tuple(sorted(labels.items()))), 0)

    def samples(self):
        """[(name, {label: value}, count)], for the exporter."""
        return [(name, dict(labels), value) for (name, labels), value in list(self._values.items())]
