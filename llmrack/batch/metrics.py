"""The batch service's /metrics: per job and tenant from the store (so a restart loses nothing), live pacing
from the running service. Names come from llmrack.contracts.metrics."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmrack.batch.pace import Pace
from llmrack.batch.runner import Runner
from llmrack.batch.store import Store
from llmrack.contracts import metrics as names


class _StoreCollector(Collector):
    def __init__(self, store: Store, pace: Pace, runner: Runner) -> None:
        self.store = store
        self.pace = pace
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(names.BATCH_RUNNER_ACTIVE, "1 on the service that holds the store's runner lease "
                                "(works the jobs), 0 on a standby", value=int(self.runner.active))
        if not self.runner.active:
            # Services sharing one store would each report its jobs: only the one working them does.
            return
        labels = [names.TENANT_LABEL, names.BATCH_ID_LABEL]
        lines = GaugeMetricFamily(names.BATCH_LINES, "lines of a batch job per state", labels=[*labels, "state"])
        tokens = CounterMetricFamily(names.BATCH_TOKENS, "tokens of a job's answered lines",
                                     labels=[*labels, "kind"])
        jobs = GaugeMetricFamily(names.BATCH_JOBS, "batch jobs per tenant and status",
                                 labels=[names.TENANT_LABEL, "status"])
        per_status: dict[tuple[str, str], int] = {}
        for job in self.store.job_stats():
            for state, count in (("pending", job.pending), ("completed", job.completed), ("failed", job.failed)):
                lines.add_metric([job.tenant, job.batch_id, state], count)
            tokens.add_metric([job.tenant, job.batch_id, "prompt"], job.prompt_tokens)
            tokens.add_metric([job.tenant, job.batch_id, "completion"], job.completion_tokens)
            per_status[(job.tenant, job.status)] = per_status.get((job.tenant, job.status), 0) + 1
        for (tenant, status), count in per_status.items():
            jobs.add_metric([tenant, status], count)
        yield lines
        yield tokens
        yield jobs
        yield GaugeMetricFamily(names.BATCH_INFLIGHT, "batch requests at the rack now", value=self.pace.inflight)
        yield GaugeMetricFamily(names.BATCH_CONCURRENCY_LIMIT, "batch requests allowed in flight now",
                                value=int(self.pace.limit))


class BatchMetrics:
    def __init__(self, store: Store, pace: Pace, runner: Runner) -> None:
        # A registry of its own: several services (tests) in one process never share series.
        self.registry = CollectorRegistry()
        self.registry.register(_StoreCollector(store, pace, runner))
        self.retries = Counter(names.BATCH_UPSTREAM_RETRIES, "batch requests sent again (rack busy or away)",
                               ["reason"], registry=self.registry)
