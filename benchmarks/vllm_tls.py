"""vLLM serving TLS with the command llmrack renders for `serving.tls: true`, checked from this host.

    CONTAINERS_CONF=~/.cache/llmrack/images/containers.conf .venv/bin/python benchmarks/vllm_tls.py

Needs the lab's cpu-vllm serving image and tiny model in the lab cache (a `llmrack lab up --engine vllm`, or the
multinode lab test, leaves both there). Makes a throwaway CA and a certificate for 127.0.0.1, renders the vLLM
command (llmrack.contracts.serving_command.render, TLS flags included), runs it in the image with the certificate
mounted where the renderer says (TLS_DIR), and prints: time to ready over https, a completion over verified TLS,
the negotiated protocol, whether TLS 1.0/1.1, plain HTTP and a client without the CA are refused.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from llmrack.contracts.serving_command import TLS_DIR, Engine, NodeKind, ServingInputs, render
from llmrack.lab.serving_artifacts import MODEL_NAME, cache_dir

PORT = 18443
NAME = "llmrack-bench-vllm-tls"


def _certificates(tls: Path) -> Path:
    def sh(command: str) -> None:
        subprocess.run(command, shell=True, check=True, cwd=tls, capture_output=True)
    curve = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    sh(f"openssl req -x509 {curve} -keyout ca.key -out ca.crt -days 1 -subj /CN=bench-ca")
    sh(f"openssl req {curve} -keyout tls.key -out tls.csr -subj /CN=127.0.0.1")
    (tls / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    sh("openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt -days 1 -extfile ext")
    (tls / "tls.key").chmod(0o644)  # a throwaway key, read by the image's non-root user
    return tls / "ca.crt"


def _refused(ca: Path, version: str) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(ca))
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[version]
    try:
        with socket.create_connection(("127.0.0.1", PORT)) as s, ctx.wrap_socket(s, server_hostname="127.0.0.1"):
            return False
    except (ssl.SSLError, OSError):
        return True


def main() -> int:
    cache = cache_dir(Path("."))
    archives = sorted(cache.glob("serving-image-cpu-vllm-*/llmrack-serving-cpu-vllm.oci.tar"))
    model = cache / "models" / MODEL_NAME
    if not archives or not (model / "config.json").exists():
        print(f"no cpu-vllm image or tiny model under {cache}: run `llmrack lab up --engine vllm` once",
              file=sys.stderr)
        return 2
    loaded = subprocess.run(["podman", "load", "-i", str(archives[-1])], capture_output=True, text=True, check=True)
    image = loaded.stdout.strip().split()[-1]
    cmd = render(ServingInputs(engine=Engine.vllm, node=NodeKind.cpu, model_path=f"/models/{MODEL_NAME}",
                               served_model_name=MODEL_NAME, weights_dtype="bf16", kv_cache_dtype="bf16",
                               tensor_parallel=1, pipeline_parallel=1, max_model_len=1024, max_num_seqs=4,
                               max_queue=16, port=PORT, memory_utilization=0.9, kv_cache_bytes=1 << 30,
                               api_keys=False, tls=True))
    print(f"rendered ({cmd.scheme}): {' '.join(cmd.argv)}")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)  # the image's non-root user reads the mounted certificate and key
        ca = _certificates(Path(tmp))
        env = [f"-e{k}={v}" for k, v in cmd.env.items()]
        subprocess.run(["podman", "rm", "-f", NAME], check=False, capture_output=True)
        started = time.monotonic()
        subprocess.run(["podman", "run", "-d", "--name", NAME, "--network", "host", "--shm-size", "1g",
                        "-v", f"{model}:/models/{MODEL_NAME}:ro", "-v", f"{tmp}:{TLS_DIR}:ro", *env,
                        "--entrypoint", cmd.argv[0], image, *cmd.argv[1:]], check=True, capture_output=True)
        try:
            while True:
                try:
                    if httpx.get(f"https://127.0.0.1:{PORT}/health", verify=str(ca), timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                running = subprocess.run(["podman", "inspect", "-f", "{{.State.Running}}", NAME], check=False,
                                         capture_output=True, text=True).stdout.strip() == "true"
                if not running or time.monotonic() - started > 420:
                    logs = subprocess.run(["podman", "logs", "--tail", "60", NAME], check=False, capture_output=True,
                                          text=True)
                    print(logs.stdout + logs.stderr, file=sys.stderr)
                    return 1
                time.sleep(2)
            print(f"ready over https: {time.monotonic() - started:.0f} s")
            r = httpx.post(f"https://127.0.0.1:{PORT}/v1/completions", verify=str(ca), timeout=60,
                           json={"model": MODEL_NAME, "prompt": "hello", "max_tokens": 4, "temperature": 0})
            print(f"completion over verified TLS: HTTP {r.status_code}")
            ctx = ssl.create_default_context(cafile=str(ca))
            with socket.create_connection(("127.0.0.1", PORT)) as s, \
                    ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                print(f"negotiated: {t.version()} {t.cipher()[0]}")
            refused = {v: _refused(ca, v) for v in ("TLSv1", "TLSv1_1")}
            print("TLS 1.0 / 1.1 refused:", refused)
            try:
                plain = f"answered HTTP {httpx.get(f'http://127.0.0.1:{PORT}/health', timeout=5).status_code}"
            except httpx.HTTPError as exc:
                plain = f"refused ({type(exc).__name__})"
            try:
                httpx.get(f"https://127.0.0.1:{PORT}/health", timeout=5)
                unverified = "accepted"
            except httpx.HTTPError as exc:
                unverified = f"refused ({type(exc).__name__})"
            print(f"plain HTTP: {plain}; a client without the CA: {unverified}")
            ok = r.status_code == 200 and all(refused.values()) and "refused" in plain and "refused" in unverified
            return 0 if ok else 1
        finally:
            subprocess.run(["podman", "rm", "-f", NAME], check=False, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
