"""The pytest plugin behind the suite: targets, parametrisation, parallel evidence gathering, verdicts, reports.

Use it from `llmrack validate`, or as testinfra users do:

    pytest -p llmrack.validation.plugin --pyargs llmrack.validation.suite \
        --hosts='ansible://all' --ansible-inventory=INV [--llmrack-level standard] [--llmrack-report DIR]

Targets come from testinfra's --hosts (with --ansible-inventory for expectations), --llmrack-local, or
--llmrack-dump (evidence written by `llmrack validate collect`). Every node's evidence is gathered in a
background thread as soon as collection ends, so nodes are read in parallel while the checks run in order.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import testinfra  # type: ignore[import-untyped]
import yaml

from llmrack import catalog
from llmrack.errors import LlmrackError
from llmrack.spec import DeploymentSpec, load_spec
from llmrack.validation import checks, expect, fabric, golden, replica, serving_probe
from llmrack.validation import hosts as hosts_mod
from llmrack.validation.acceptance import check_expectation_name
from llmrack.validation.evidence import Evidence, Item, ServingImageProbe, gather
from llmrack.validation.expect import Expectations, NodeKind
from llmrack.validation.report import Record, write_reports

LEVELS = ("quick", "standard", "full")
_RECORD = "llmrack"


@dataclass
class Target:
    """One node to check: its expectations and where its evidence comes from."""

    name: str
    exp: Expectations
    host: Any = None  # a testinfra Host for live runs
    dump: Evidence | None = None
    future: Future[Evidence] | None = field(default=None, repr=False)
    # The leader of a replica of several nodes: its replica's all-reduce (llmrack.validation.replica).
    replica_job: Future[Item] | None = field(default=None, repr=False)
    # ... and its accelerators' fabric between its nodes (llmrack.validation.fabric): nccl-tests or hccn_tool.
    fabric_job: Future[Item | None] | None = field(default=None, repr=False)

    def gather(self, level: str) -> Evidence:
        if self.dump is not None:
            return self.dump
        ev = gather(self.host, self.name, level, self.exp.python, self.exp.probe_image)
        if self.replica_job is not None:
            ev.items[replica.ITEM] = self.replica_job.result()
        if self.fabric_job is not None and (item := self.fabric_job.result()) is not None:
            ev.items[fabric.ITEM] = item
        if self.exp.serving_url:
            model = self.exp.spec.model.label if self.exp.spec else None
            reference = self.exp.var(golden.GOLDEN_VAR)
            ev.items["serving"] = serving_probe.probe(self.exp.serving_url, self.exp.api_keys, model,
                                                      ready=serving_probe.ready_path(self.exp.spec,
                                                                                     self.exp.serving_device),
                                                      golden_reference=golden.load(reference) if reference else None)
        return ev

    def evidence(self) -> Evidence:
        assert self.future is not None, "evidence is gathered once collection has finished"
        return self.future.result()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llmrack", "llmrack post-provision validation")
    group.addoption("--llmrack-level", choices=LEVELS, default="quick", help="quick | standard | full")
    group.addoption("--llmrack-report", metavar="DIR", help="write report.json, report.html and junit.xml here")
    group.addoption("--llmrack-spec", metavar="FILE", help="deployment spec (default: inventory llmrack_deployment)")
    group.addoption("--llmrack-local", action="store_true", help="check the machine pytest runs on")
    group.addoption("--llmrack-kind", choices=[k.value for k in NodeKind], help="node kind for --llmrack-local / dumps")
    group.addoption("--llmrack-dump", action="append", default=[], metavar="PATH", help="evaluate a collected dump")
    group.addoption("--llmrack-serving-url", help="serving URL of the local node (--llmrack-local)")
    group.addoption("--llmrack-api-key-file", help="file holding an API key for --llmrack-serving-url")
    group.addoption("--llmrack-expect", action="append", default=[], metavar="NAME=VALUE",
                    help="pin an expectation or acceptance threshold over the spec and inventory (repeatable)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kinds(*kinds): node kinds (nvidia, ascend, cpu) a check applies to")
    config.addinivalue_line("markers", "level(name): the lowest level that runs this check")
    report = config.getoption("llmrack_report", None)
    if report:
        # Made now: a report directory that cannot be written ends the run before any node is touched.
        try:
            Path(report).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise pytest.UsageError(f"cannot write reports to {report}: {exc.strerror or exc}") from None
    if report and not getattr(config.option, "xmlpath", None):
        # Before junitxml's own pytest_configure reads it (tryfirst).
        config.option.xmlpath = str(Path(report) / "junit.xml")
    session = Session(config)
    config.pluginmanager.register(session, "llmrack-validation-session")
    if not (config.option.help or config.option.version):
        # Resolve now: a bad inventory, spec or option ends the run with one clear message (exit 4 -> 2).
        session.targets()


class Session:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.level: str = config.getoption("llmrack_level")
        self._targets: list[Target] | None = None
        self.records: list[Record] = []
        self.started = time.time()
        self.pool: ThreadPoolExecutor | None = None
        self.replica_pool: ThreadPoolExecutor | None = None
        self.gather_seconds: dict[str, float] = {}

    # --- targets ------------------------------------------------------------------------------------
    def targets(self) -> list[Target]:
        if self._targets is None:
            try:
                self._targets = self._resolve()
            except LlmrackError as exc:
                raise pytest.UsageError(str(exc)) from None
        return self._targets

    def _spec(self) -> DeploymentSpec | None:
        path = self.config.getoption("llmrack_spec")
        return load_spec(Path(path)) if path else None

    def _resolve(self) -> list[Target]:
        opt = self.config.option
        spec = self._spec()
        kind = NodeKind(opt.llmrack_kind) if opt.llmrack_kind else None
        inventory = getattr(opt, "ansible_inventory", None)
        if opt.llmrack_dump:
            out = []
            for path in opt.llmrack_dump:
                ev = Evidence.load(Path(path))
                out.append(Target(ev.host, self._expect(ev.host, spec, kind, inventory), dump=ev))
            return out
        if opt.llmrack_local:
            return [self._local(spec, kind)]
        hosts = getattr(opt, "hosts", None)
        if not hosts:
            raise LlmrackError("no nodes: give --hosts (e.g. ansible://all with --ansible-inventory), "
                               "--llmrack-local or --llmrack-dump")
        found = hosts_mod.get_hosts(
            hosts.split(","), inventory, connection=opt.connection, ssh_config=opt.ssh_config,
            ssh_identity_file=opt.ssh_identity_file, sudo=opt.sudo, sudo_user=opt.sudo_user,
            force_ansible=opt.force_ansible,
        )
        out = []
        for host in found:
            name = host.backend.get_hostname()
            out.append(Target(name, self._expect(name, spec, kind, inventory), host=host))
        if not out:
            raise LlmrackError(f"no host matches {hosts!r}")
        return out

    def _overrides(self) -> dict[str, Any]:
        return parse_expect(self.config.getoption("llmrack_expect"))

    def _expect(
        self, name: str, spec: DeploymentSpec | None, kind: NodeKind | None, inventory: str | None
    ) -> Expectations:
        hostvars: dict[str, Any] = {}
        origin: dict[str, str] = {}
        if inventory:
            hostvars, origin = hosts_mod.host_vars_with_origin(inventory, name)
        elif kind is None and spec is not None:
            kind = expect.VENDOR_KIND[spec_accelerator_vendor(spec)]
        return expect.build(name, hostvars, spec=spec, kind=kind,
                            where=f"the inventory {inventory}" if inventory else "command line",
                            overrides=self._overrides(), origin=origin)

    def _local(self, spec: DeploymentSpec | None, kind: NodeKind | None) -> Target:
        opt = self.config.option
        name = socket.gethostname()
        hostvars: dict[str, Any] = {}
        if opt.llmrack_serving_url:
            hostvars["llmrack_serving_url"] = opt.llmrack_serving_url
        if opt.llmrack_api_key_file:
            try:
                hostvars["serving_api_keys"] = [Path(opt.llmrack_api_key_file).read_text().strip()]
            except OSError as exc:
                raise LlmrackError(f"cannot read the API key file {opt.llmrack_api_key_file}: "
                                   f"{exc.strerror or exc}") from None
        if kind is None:
            kind = expect.VENDOR_KIND[spec_accelerator_vendor(spec)] if spec else NodeKind.cpu
        # The local node's probes use the Python running the suite: its torch is this machine's torch.
        hostvars["llmrack_validation_python"] = os.environ.get("LLMRACK_VALIDATION_PYTHON") or _sys_executable()
        return Target(name, expect.build(name, hostvars, spec=spec, kind=kind, where="--local",
                                         overrides=self._overrides()),
                      host=testinfra.get_host("local://"))

    # --- collection -----------------------------------------------------------------------------------
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "node" not in metafunc.fixturenames:
            return
        marker = metafunc.definition.get_closest_marker("kinds")
        kinds = set(marker.args) if marker else {k.value for k in NodeKind}
        targets = [t for t in self.targets() if t.exp.kind.value in kinds]
        if "device" in metafunc.fixturenames:
            params, ids = [], []
            for t in targets:
                devices: list[int | None] = list(range(t.exp.count)) if t.exp.count else [None]
                for d in devices:
                    params.append((t, d))
                    ids.append(t.name if d is None else f"{t.name}-{t.exp.device_label}{d}")
            metafunc.parametrize(("node", "device"), params, ids=ids)
        else:
            metafunc.parametrize("node", targets, ids=[t.name for t in targets])

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        allowed = LEVELS[: LEVELS.index(self.level) + 1]
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for it in items:
            marker = it.get_closest_marker("level")
            # Checks for kinds of node not in this run (no target) are dropped, not reported as skipped.
            wanted = (marker.args[0] if marker else "quick") in allowed and bool(_targets_of(it))
            (keep if wanted else drop).append(it)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        used = {id(t): t for it in session.items for t in _targets_of(it)}
        if not used:
            return
        # --- replicas of several nodes: the cross-node all-reduce, on all of a replica's nodes at once ---
        members = [replica.Member(t.name, t.host, t.exp.replica_rank, t.exp.vars, t.exp.probe_image or _image(t),
                                  t.exp.kind.value, t.exp.count)
                   for t in used.values() if t.host is not None and t.dump is None]
        groups = replica.replicas(members)
        if groups:
            self.replica_pool = ThreadPoolExecutor(max_workers=2 * len(groups), thread_name_prefix="llmrack-replica")
            by_name = {t.name: t for t in used.values()}
            for ms in groups.values():
                by_name[ms[0].name].replica_job = self.replica_pool.submit(replica.allreduce, ms)
                by_name[ms[0].name].fabric_job = self.replica_pool.submit(fabric.run, ms)
        # --- end replicas ---
        self.pool = ThreadPoolExecutor(max_workers=min(32, len(used)), thread_name_prefix="llmrack-gather")
        for t in used.values():
            t.future = self.pool.submit(self._timed_gather, t)

    def _timed_gather(self, t: Target) -> Evidence:
        start = time.perf_counter()
        try:
            return t.gather(self.level)
        finally:
            self.gather_seconds[t.name] = round(time.perf_counter() - start, 2)

    # --- verdicts and reports -------------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        if report.when == "teardown" or (report.when == "setup" and report.passed):
            return
        rec = None
        for i, (key, value) in enumerate(item.user_properties):
            if key == _RECORD:
                rec = json.loads(str(value))
                del item.user_properties[i]
                break
        if rec is None:
            if report.skipped:
                reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                rec = {"status": "skip", "detail": str(reason).removeprefix("Skipped: ")}
            else:
                # An exception outside a verdict (node unreachable, a bug): the check could not run.
                text = call.excinfo.exconly() if call.excinfo else "the test recorded no verdict"
                rec = {"status": "error", "detail": text[-1000:]}
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec else {}
        node, device = params.get("node"), params.get("device")
        module = Path(str(item.path)).stem.removeprefix("test_")
        rec["check"] = f"{module}.{item.originalname.removeprefix('test_')}"  # type: ignore[attr-defined]
        rec["node"] = node.name if isinstance(node, Target) else None
        rec["device"] = None if device is None or not isinstance(node, Target) else f"{node.exp.device_label}{device}"
        rec["seconds"] = round(report.duration, 3)
        # The report may hold a copy of the item's properties: keep exactly one (complete) record in it.
        report.user_properties = [(k, v) for k, v in report.user_properties if k != _RECORD]
        report.user_properties.append((_RECORD, json.dumps(rec, default=str)))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        raw = next((v for k, v in report.user_properties if k == _RECORD), None)
        if raw is not None:
            self.records.append(Record.from_dict(json.loads(str(raw))))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """One line per check that did not pass (failures first), then one summary line per node."""
        if not self.records:
            return
        tr = terminalreporter
        tr.section("llmrack validation")
        order = {"fail": 0, "error": 1, "skip": 2}
        for rec in sorted((r for r in self.records if r.status != "pass"), key=lambda r: (order[r.status], r.id)):
            if rec.status == "skip" and self.config.option.verbose <= 0:
                continue
            value = "" if rec.measured is None else f": measured {rec.measured}{' ' + rec.unit if rec.unit else ''}"
            want = f", want {rec.threshold}" if rec.threshold else ""
            tr.write_line(f"{rec.status.upper():5} {rec.id}{value}{want}{' - ' if rec.detail else ''}{rec.detail}",
                          red=rec.status != "skip", yellow=rec.status == "skip")
        for name in sorted({r.node or "" for r in self.records}):
            mine = [r.status for r in self.records if r.node == name]
            counts = ", ".join(f"{mine.count(s)} {s}" for s in ("fail", "error", "skip", "pass") if mine.count(s))
            tr.write_line(f"{name}: {counts}")

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.replica_pool is not None:
            self.replica_pool.shutdown(wait=True, cancel_futures=True)
        report = self.config.getoption("llmrack_report")
        if report and self._targets is not None:
            meta = {
                "level": self.level,
                "started": self.started,
                "seconds": round(time.time() - self.started, 2),
                "gather_seconds": self.gather_seconds,
                "nodes": {t.name: _node_meta(t) for t in self._targets},
            }
            write_reports(Path(report), self.records, meta)


def _image(t: Target) -> ServingImageProbe:
    """The serving image of the node's running serving container (where torch is), as the serving role names it."""
    return ServingImageProbe(namespace=str(t.exp.var("serving_containerd_namespace") or "llmrack"),
                             container=str(t.exp.var("serving_container_name") or "llmrack-serving"),
                             snapshotter=str(t.exp.var("containerd_snapshotter") or "overlayfs"))


def _node_meta(t: Target) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "kind": t.exp.kind.value,
        "accelerator": t.exp.accelerator.name if t.exp.accelerator else None,
        "expected_devices": t.exp.count,
        "source": "dump" if t.dump is not None else "live",
    }
    if t.future is not None and t.future.done() and t.future.exception() is None:
        ev = t.future.result()
        uname = ev.get("uname")
        meta["uname"] = uname.out.strip() if uname else None
        meta["collected_at"] = ev.manifest.get("collected_at")
    elif t.future is not None and t.future.done():
        meta["gather_error"] = str(t.future.exception())
    return meta


def _targets_of(item: pytest.Item) -> list[Target]:
    callspec = getattr(item, "callspec", None)
    node = callspec.params.get("node") if callspec else None
    return [node] if isinstance(node, Target) else []


def parse_expect(items: list[str]) -> dict[str, Any]:
    """--expect NAME=VALUE pairs; VALUE is read as YAML (numbers, lists and mappings as in an inventory)."""
    out: dict[str, Any] = {}
    for raw in items:
        name, sep, value = raw.partition("=")
        if not sep or not name.strip():
            raise LlmrackError(f"--expect {raw!r}: expected NAME=VALUE, e.g. --expect nvidia_driver_version=550.90.07")
        try:
            check_expectation_name(name.strip())
        except ValueError as exc:
            raise LlmrackError(f"--expect {raw!r}: {exc}") from None
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise LlmrackError(f"--expect {raw!r}: the value is not valid YAML ({exc})") from None
        # A version such as 550.90 must stay text, not become the float 550.9.
        out[name.strip()] = value.strip() if isinstance(parsed, float) and "version" in name else parsed
    return out


def spec_accelerator_vendor(spec: DeploymentSpec) -> Any:
    return catalog.accelerator(spec.accelerator).vendor


def _sys_executable() -> str:
    return sys.executable


# --- fixtures the suite uses ------------------------------------------------------------------------
@pytest.fixture
def verdict(request: pytest.FixtureRequest, node: Target) -> Callable[..., None]:
    """verdict(check_fn, *args): evaluate a check on the node's evidence and turn its Outcome into the test's
    result (pass, fail, skip with reason, error), recording measured value, threshold and unit."""

    def _verdict(fn: checks.CheckFn, *args: Any) -> None:
        __tracebackhide__ = True
        outcome = checks.run(fn, node.evidence(), node.exp, *args)
        rec = {"status": outcome.status, "measured": outcome.measured, "threshold": outcome.threshold,
               "unit": outcome.unit, "detail": outcome.detail, "data": outcome.data}
        props = request.node.user_properties
        props.append((_RECORD, json.dumps(rec, default=str)))
        for key in ("status", "measured", "threshold", "unit"):
            if rec[key] is not None:
                props.append((key, str(rec[key])))
        message = f"measured {outcome.measured}{' ' + outcome.unit if outcome.unit else ''}, want {outcome.threshold}"
        if outcome.status == "skip":
            pytest.skip(outcome.detail)
        if outcome.status == "fail":
            pytest.fail(f"{message}: {outcome.detail}".rstrip(": "), pytrace=False)
        if outcome.status == "error":
            # Recorded as "error" in report.json; pytest (and so junit.xml) can only call it a failure.
            pytest.fail(f"error: could not check: {outcome.detail}", pytrace=False)

    return _verdict
