"""The service's metrics in the Prometheus text exposition format (version 0.0.4), by hand:
a handful of counters and histograms need no client library.

``circle_requests_total{endpoint, status}``, ``circle_errors_total{endpoint, status}`` (4xx and
5xx answers), ``circle_request_seconds{endpoint}`` (latency histogram), ``circle_batch_size``
(images per SavedModel call, histogram), ``circle_batch_seconds`` (SavedModel call time) and
``circle_gallery_faces`` (a gauge read when scraped).
"""

import threading

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _label_text(labels):
    if not labels:
        return ""
    parts = []
    for key, value in labels:
        escaped = str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{key}="{escaped}"')
    return "{" + ",".join(parts) + "}"


def _number(value):
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class Histogram:
    """Cumulative buckets, sum and count, as Prometheus histograms have them."""

    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value):
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def lines(self, name, labels=()):
        labels = tuple(labels)
        out = []
        for bound, count in zip(self.buckets, self.counts):
            out.append(f"{name}_bucket{_label_text(labels + (('le', _number(bound)),))} {count}")
        out.append(f"{name}_bucket{_label_text(labels + (('le', '+Inf'),))} {self.count}")
        out.append(f"{name}_sum{_label_text(labels)} {_number(float(self.total))}")
        out.append(f"{name}_count{_label_text(labels)} {self.count}")
        return out


class Metrics:
    """What the service counts; :meth:`render` gives the ``/metrics`` text."""

    def __init__(self, gallery_size=None):
        self._lock = threading.Lock()
        self._requests = {}
        self._latency = {}
        self._batch_size = Histogram(BATCH_BUCKETS)
        self._batch_seconds = Histogram(LATENCY_BUCKETS)
        self._gallery_size = gallery_size

    def track_gallery(self, gallery_size):
        """Report ``gallery_size()`` as ``circle_gallery_faces`` at each scrape."""
        self._gallery_size = gallery_size

    def observe_request(self, endpoint, status, seconds):
        with self._lock:
            key = (endpoint, int(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            self._latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, size, seconds):
        with self._lock:
            self._batch_size.observe(size)
            self._batch_seconds.observe(seconds)

    def render(self):
        with self._lock:
            lines = ["# HELP circle_requests_total HTTP requests answered, by endpoint and status.",
                     "# TYPE circle_requests_total counter"]
            for (endpoint, status), count in sorted(self._requests.items()):
                labels = (("endpoint", endpoint), ("status", status))
                lines.append(f"circle_requests_total{_label_text(labels)} {count}")
            lines += ["# HELP circle_errors_total Requests answered with a 4xx or 5xx status.",
                      "# TYPE circle_errors_total counter"]
            for (endpoint, status), count in sorted(self._requests.items()):
                if status >= 400:
                    labels = (("endpoint", endpoint), ("status", status))
                    lines.append(f"circle_errors_total{_label_text(labels)} {count}")
            lines += ["# HELP circle_request_seconds Request latency in seconds.",
                      "# TYPE circle_request_seconds histogram"]
            for endpoint, histogram in sorted(self._latency.items()):
                lines += histogram.lines("circle_request_seconds", (("endpoint", endpoint),))
            lines += ["# HELP circle_batch_size Images per SavedModel call (micro-batching).",
                      "# TYPE circle_batch_size histogram"]
            lines += self._batch_size.lines("circle_batch_size")
            lines += ["# HELP circle_batch_seconds Duration of one SavedModel call in seconds.",
                      "# TYPE circle_batch_seconds histogram"]
            lines += self._batch_seconds.lines("circle_batch_seconds")
        if self._gallery_size is not None:
            lines += ["# HELP circle_gallery_faces Face images in the search index.",
                      "# TYPE circle_gallery_faces gauge",
                      f"circle_gallery_faces {int(self._gallery_size())}"]
        return "\n".join(lines) + "\n"
