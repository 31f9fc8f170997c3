"""Every Prometheus metric, defined once. Labels are bounded: stage, topic, office, bank, reason, outcome.

Never a person: no NIK, passport, account, VA or participant id in any label.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- partner APIs ---------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "sinergi_http_requests_total",
    "Partner API requests by endpoint, partner and outcome",
    ["api", "endpoint", "partner", "outcome"],
)
HTTP_LATENCY = Histogram(
    "sinergi_http_request_duration_seconds",
    "Partner API request latency",
    ["api", "endpoint"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REJECTIONS = Counter(
    "sinergi_http_rejections_total", "Requests refused with a 4xx, by reason code", ["api", "endpoint", "reason"]
)
AUTH_FAILURES = Counter(
    "sinergi_auth_failures_total",
    "Requests refused by authentication (token, partner id, timestamp window, signature), by reason",
    ["api", "endpoint", "partner", "reason"],
)
SECRET_RELOADS = Counter(
    "sinergi_partner_secret_reloads_total", "Re-reads of the partner secrets file, by result", ["result"]
)
PRODUCE_LATENCY = Histogram(
    "sinergi_produce_ack_seconds",
    "Time from produce to Kafka acknowledgement at the edge",
    ["topic"],
    buckets=LATENCY_BUCKETS,
)
PRODUCE_FAILURES = Counter(
    "sinergi_produce_failures_total", "Edge produce attempts Kafka did not acknowledge", ["topic", "reason"]
)

# --- stream processors ----------------------------------------------------------------------------
EVENTS_IN = Counter("sinergi_events_in_total", "Events consumed by a stage", ["stage", "topic"])
EVENTS_OUT = Counter("sinergi_events_out_total", "Events produced by a stage", ["stage", "topic"])
DEAD_LETTERS = Counter(
    "sinergi_dead_letters_total", "Events a stage sent to its dead-letter topic", ["stage", "reason"]
)
PROCESSING_LATENCY = Histogram(
    "sinergi_processing_latency_seconds",
    "Event time (accepted at the edge) to output, per stage",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
RECONCILE_OUTCOMES = Counter("sinergi_reconcile_outcomes_total", "Reconciler decisions by outcome", ["outcome"])
