"""`llmrack lab up|status|down`: the rack in a box (thin over llmrack.lab.lab)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from llmrack.cli.output import emit_json, info, stderr, stdout
from llmrack.lab import lab, serving_artifacts
from llmrack.lab.state import Profile

app = typer.Typer(help="Rack in a box: Debian 12 nodes in podman, provisioned by the Ansible roles over SSH.",
                  no_args_is_help=True)

LAB_DIR = typer.Option(lab.DEFAULT_LAB_DIR, "--lab-dir", help="where the lab keeps its state, keys and inventory")


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=stderr,
                    transient=False)


@app.command("up")
def up(
    nodes: int = typer.Option(2, "--nodes", "-n", help="number of nodes (node1 also runs Prometheus)"),
    profile: list[Profile] = typer.Option(
        [], "--profile", "-p",
        help="node profile, once per node in order; the last one fills the rest (default: cpu)",
    ),
    provision: bool = typer.Option(True, "--provision/--no-provision", help="run site.yml after booting"),
    serving: bool = typer.Option(
        True, "--serving/--no-serving", help="build the serving image and tiny model and deploy them (serving play)"
    ),
    validate: bool = typer.Option(
        True, "--validate/--no-validate", help="run `llmrack validate` (quick level) against the nodes afterwards"
    ),
    engine: str = typer.Option(
        "llmrack", "--engine", help="llmrack (its own engine, the cpu image) or vllm (vLLM-CPU, the cpu-vllm image; "
        "starts in ~2-4 minutes on 2 cores)"
    ),
    tensor_parallel: int | None = typer.Option(
        None, "--tensor-parallel", help="the spec's serving.tensor_parallel (default: auto, from the plan); more "
        "than 1 needs --engine vllm, which runs one rank per core set of each node"
    ),
    pipeline_parallel: int | None = typer.Option(
        None, "--pipeline-parallel", help="the spec's serving.pipeline_parallel: more than 1 makes one replica of "
        "that many nodes (one stage each) serving a tiny DeepSeek-V3; needs --engine vllm (docs/multinode.md)"
    ),
    lab_dir: Path = LAB_DIR,
) -> None:
    """The main job: node image (cached) -> serving image and tiny model (cached) -> scan gate -> boot the nodes
    -> site.yml -> validation -> where to look. Nodes stay up; re-running resumes from the caches and converges."""
    with _progress() as progress:
        task = progress.add_task("starting", total=None)

        def step(msg: str) -> None:
            progress.update(task, description=msg)
            progress.console.print(f"[dim]lab:[/dim] {msg}", highlight=False)

        def on_task(name: str) -> None:
            progress.update(task, description=f"site.yml: {name}")

        result = lab.up(lab_dir, nodes, profile, provision=provision, serving=serving, step=step, on_task=on_task,
                        engine=engine, tensor_parallel=tensor_parallel, pipeline_parallel=pipeline_parallel)
        progress.update(task, description="done")
    for name, secs in result.seconds.items():
        info(f"  {name}: {secs:.0f} s")
    _report(result, "llmrack lab up (same options)")
    if not provision:
        return
    report_dir = result.state.lab_dir / "validation"
    if validate:
        info("lab: validation (llmrack validate --level quick) against every node")
        rc = lab.validate(result.state, report_dir)
        if rc != 0:
            stderr.print(
                f"[red]validation {'found failing checks' if rc == 1 else 'could not run'} (exit {rc})[/red]: read "
                f"{report_dir}/report.html; re-check with `llmrack validate --inventory {result.state.inventory} "
                f"--report {report_dir}` or re-run `llmrack lab up` to converge first.", highlight=False)
            raise typer.Exit(rc)
    _where_to_look(result, report_dir if validate else None, serving)


def _where_to_look(result: lab.UpResult, report_dir: Path | None, serving: bool) -> None:
    data = lab.status(result.state.lab_dir)
    stdout.print("\n[bold]The lab is up.[/bold]", highlight=False)
    if result.gate:
        stdout.print(f"[yellow]scan gate:[/yellow] {result.gate}", highlight=False)
    gateway = data["gateway_url"]
    for node in data["nodes"]:
        stdout.print(f"[bold]{node['name']}[/bold] ({node['profile']}) ssh {node['ssh']} serving {node['serving_url']}",
                     highlight=False)
        if serving and not gateway:
            _curl(node["serving_url"], data["api_key_file"])
        if node["prometheus_url"]:
            stdout.print(f"  Prometheus UI: {node['prometheus_url']} (user llmrack, password: "
                         f"cat {data['monitoring_password_file']})", highlight=False)
    if report_dir is not None:
        stdout.print(f"validation report: {report_dir / 'report.html'} (also report.json, junit.xml)", highlight=False)
    stdout.print(f"inventory: {data['inventory']}   status: llmrack lab status   tear down: llmrack lab down",
                 highlight=False)
    if serving and gateway:
        stdout.print(f"[bold]The rack's endpoint[/bold] (gateway on node1, balancing every node): {gateway}",
                     highlight=False)
        _curl(gateway, data["api_key_file"], data["rack_ca"])


def _curl(url: str, api_key_file: str, ca: str | None = None) -> None:
    stdout.print(
        f"  curl -s {url}/v1/completions " + (f"--cacert {ca} " if ca else "") +
        f"-H \"Authorization: Bearer $(cat {api_key_file})\" -H 'content-type: application/json' "
        f"-d '{{\"model\": \"{serving_artifacts.SERVED_NAME}\", \"prompt\": \"Hello\", \"max_tokens\": 16}}'",
        highlight=False, soft_wrap=True)


@app.command("provision")
def provision(
    playbook: str = typer.Option("site.yml", "--playbook", help="playbook under ansible/playbooks"),
    extra_vars: list[str] = typer.Option(
        [], "--extra-vars", "-e", help="KEY=VALUE passed to ansible-playbook -e (repeatable)"),
    lab_dir: Path = LAB_DIR,
) -> None:
    """Re-run a playbook against the running lab (a second run must report changed=0)."""
    with _progress() as progress:
        task = progress.add_task(playbook, total=None)
        result = lab.provision(lab_dir, playbook, [a for v in extra_vars for a in ("-e", v)],
                               on_task=lambda name: progress.update(task, description=f"{playbook}: {name}"))
    info(f"  {playbook}: {result.seconds[playbook]:.0f} s")
    _report(result, " ".join(["llmrack lab provision --playbook", playbook, *(f"-e {v}" for v in extra_vars)]))


def _report(result: lab.UpResult, resume: str) -> None:
    for host, counts in sorted(result.recap.items()):
        info(f"  {host}: " + " ".join(f"{k}={v}" for k, v in counts.items() if k in ("ok", "changed", "failed",
                                                                                   "unreachable")))
    if result.log:
        info(f"log: {result.log}")
    info(f"inventory: {result.state.inventory}")
    failed = result.failed_hosts
    if result.rc != 0 and not result.recap:
        stderr.print(f"[red]ansible-playbook failed before any host ran (exit {result.rc})[/red]; see {result.log}",
                     highlight=False)
        raise typer.Exit(1)
    if failed or result.rc != 0:
        unreached = result.unreached_hosts
        stderr.print(f"[red]failed:[/red] {', '.join(failed) or 'see the log'}"
                     + (f"; not reached: {', '.join(unreached)}" if unreached else "")
                     + f". Read the log above, then re-run `{resume}` to converge them.", highlight=False)
        raise typer.Exit(1)


@app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    lab_dir: Path = LAB_DIR,
) -> None:
    """Show the lab's nodes, their ports and the inventory path."""
    data = lab.status(lab_dir)
    if as_json:
        emit_json(data)
        return
    stdout.print(f"inventory: {data['inventory']}")
    for node in data["nodes"]:
        last = node["last_run"] or {}
        stdout.print(
            f"{node['name']:<7} {node['profile']:<10} {'running' if node['running'] else 'stopped':<8} "
            f"ssh={node['ssh']} serving={node['serving_url']}"
            + (f" prometheus={node['prometheus_url']}" if node["prometheus_url"] else "")
            + (f" last run: changed={last.get('changed')} failed={last.get('failed')}" if last else ""),
            highlight=False,
        )


@app.command("down")
def down(lab_dir: Path = LAB_DIR) -> None:
    """Remove the nodes, their network and the lab's state; the caches stay (the next `up` reuses them)."""
    start = time.monotonic()
    removed, kept = lab.down(lab_dir)
    info(f"removed {len(removed)} container(s), the lab's network and its state in {lab_dir} "
         f"in {time.monotonic() - start:.0f} s")
    if kept.images or kept.dirs:
        info("kept, as caches for the next `llmrack lab up`: " + ", ".join([*kept.images, *map(str, kept.dirs)]))
        info(f"remove them too: {kept.remove_command()}")
