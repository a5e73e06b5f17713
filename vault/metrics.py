"""Prometheus metrics: RPC counts by status, latency histograms, extraction queue depth and live
templates per tenant. Labels carry RPC names, status codes and tenant names only: never subject ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from vault.modalities import MODALITY_NAMES

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.rpcs = Counter("vault_rpc", "RPCs handled, by method and status code", ["rpc", "code"], registry=self.registry)
        self.latency = Histogram("vault_rpc_seconds", "RPC latency", ["rpc"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.pending = Gauge("vault_extraction_pending", "samples waiting for or in extraction", registry=self.registry)
        self._http = None

    def observe(self, rpc: str, code: str, seconds: float) -> None:
        self.rpcs.labels(rpc, code).inc()
        self.latency.labels(rpc).observe(seconds)

    def watch(self, extractor, index, keys, identify_capacity=None) -> None:
        self.pending.set_function(lambda: extractor.pending)
        self.registry.register(_TemplateCounts(index, keys, identify_capacity))

    def serve(self, listen: str) -> int:
        host, port = listen.rsplit(":", 1)
        self._http, _ = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()


class _TemplateCounts:
    """Live templates per tenant, and what Identify can promise at that size (expected FNIR at
    the FPIR target; vault.templates.identification), read from the match index at scrape time."""

    def __init__(self, index, keys, identify_capacity=None):
        self.index, self.keys, self.identify_capacity = index, keys, identify_capacity

    def collect(self):
        family = GaugeMetricFamily("vault_live_templates", "live templates in the match index", labels=["tenant"])
        fnir = GaugeMetricFamily("vault_identify_expected_fnir",
                                 "expected share of enrolled people Identify misses while holding its FPIR target "
                                 "(one-sample templates)", labels=["tenant", "modality"])
        for tenant in self.keys.tenants():
            family.add_metric([tenant], self.index.count(tenant))
            for modality, capacity in (self.identify_capacity(tenant) if self.identify_capacity else []):
                fnir.add_metric([tenant, MODALITY_NAMES[modality]], capacity.expected_fnir)
        yield family
        yield fnir
