#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (as root) to run llmrack, its lab and its tests.
# Idempotent: re-running only installs what is missing. Used by `make setup` and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Progress: each step says what it does and how long it took, so a first run (minutes) never looks hung.
SETUP_START=$SECONDS
STEP_START=$SECONDS
step() {  # step N/TOTAL "what"
  STEP_START=$SECONDS
  echo "setup: [$1] $2" >&2
}
done_step() {
  echo "setup:       done in $((SECONDS - STEP_START)) s" >&2
}

APT_PACKAGES=(python3 python3-venv python3-dev git make curl ca-certificates)
# The lab (llmrack lab): podman nodes built with debootstrap, run with runc; ssh to reach them.
APT_PACKAGES+=(podman buildah skopeo debootstrap runc openssh-client xz-utils)
# Images (llmrack image build / scan tests): podman builds offline on a debootstrapped Debian base.
APT_PACKAGES+=(podman buildah skopeo debootstrap runc)
APT_PACKAGES+=(chromium)  # headless browser: the validation report test looks at report.html
APT_PACKAGES+=(docker-registry)  # the lab's registry for images and model versions (llmrack.lab.registry runs its own)
APT_PACKAGES+=(haproxy nftables)  # the gateway and firewall roles' tests run the real HAProxy and nftables on this host

step 1/3 "Debian packages (apt): podman, buildah, debootstrap, chromium, ..."
need_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages ${need_apt[*]}; run as root or install them first" >&2
    exit 2
  fi
  echo "setup: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  done_step
else
  echo "setup:       all present" >&2
fi

# The lab starts a registry of its own per lab; Debian's package would also run one on :5000 on a systemd host.
if [[ -d /run/systemd/system ]] && systemctl is-enabled --quiet docker-registry 2>/dev/null; then
  systemctl disable --now docker-registry
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.llmrack-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  step 2/3 "Python: pip and torch ${TORCH_VERSION:-2.13.0} (CPU build) into .venv"
  .venv/bin/pip install -q --upgrade pip
  # torch first and pinned: an open range would make pip resolve a multi-GB CUDA build on a CPU box.
  .venv/bin/pip install -q "torch==${TORCH_VERSION:-2.13.0}"
  done_step
  step 3/3 "Python: llmrack with its serving, dev and infra extras (ansible, pulumi SDKs, transformers, ...)"
  .venv/bin/pip install -q -e ".[serving,dev,infra]"
  touch "$stamp"
  done_step
else
  echo "setup: [2-3/3] Python packages: .venv is up to date with pyproject.toml" >&2
fi
echo "setup: ready (.venv) in $((SECONDS - SETUP_START)) s" >&2
