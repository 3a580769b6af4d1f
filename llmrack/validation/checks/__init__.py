"""The checks: evidence + expectations -> Outcome. One function per check; the pytest suite calls them.

Layout: `base` (Outcome and the helpers every check uses), `family` (the interface an accelerator family
implements) and `families` (the registered ones), then one module per area: `system` (OS and runtime, every
node), `nvidia`, `ascend` (each family's own checks), `perf` (the probe's figures), `security` and `serving`.

Every threshold is a named constant in its module or a catalog figure; docs/validation.md gives the source of each.
"""

from llmrack.validation.checks.ascend import (
    ascend_cann_version,
    ascend_driver_version,
    ascend_firmware_version,
    ascend_hbm,
    ascend_hccn_link,
    ascend_health,
    ascend_npu_count,
)
from llmrack.validation.checks.base import CheckFn, Outcome, run
from llmrack.validation.checks.families import FAMILIES, of_kind
from llmrack.validation.checks.family import AcceleratorFamily
from llmrack.validation.checks.nvidia import (
    nvidia_driver_version,
    nvidia_ecc_mode,
    nvidia_ecc_uncorrectable,
    nvidia_fabricmanager,
    nvidia_gpu_count,
    nvidia_gpu_xid,
    nvidia_memory,
    nvidia_nvlink,
    nvidia_pcie_link,
    nvidia_persistence_mode,
    nvidia_row_remap,
    nvidia_sku,
    nvidia_throttle,
    nvidia_xid,
)
from llmrack.validation.checks.perf import (
    perf_allreduce,
    perf_cpu_gemm,
    perf_cpu_membw,
    perf_h2d,
    perf_matmul_bf16,
    perf_membw,
    perf_p2p_latency,
    perf_pcie_latency,
)
from llmrack.validation.checks.security import security_tls_expiry
from llmrack.validation.checks.serving import serving_api_key, serving_completion, serving_golden, serving_ready
from llmrack.validation.checks.system import (
    os_containerd_runtime,
    os_kernel_cmdline,
    os_nccl_env,
    os_nouveau_absent,
    os_services,
    os_sysctl,
)

__all__ = [
    "FAMILIES",
    "AcceleratorFamily",
    "CheckFn",
    "Outcome",
    "ascend_cann_version",
    "ascend_driver_version",
    "ascend_firmware_version",
    "ascend_hbm",
    "ascend_hccn_link",
    "ascend_health",
    "ascend_npu_count",
    "nvidia_driver_version",
    "nvidia_ecc_mode",
    "nvidia_ecc_uncorrectable",
    "nvidia_fabricmanager",
    "nvidia_gpu_count",
    "nvidia_gpu_xid",
    "nvidia_memory",
    "nvidia_nvlink",
    "nvidia_pcie_link",
    "nvidia_persistence_mode",
    "nvidia_row_remap",
    "nvidia_sku",
    "nvidia_throttle",
    "nvidia_xid",
    "of_kind",
    "os_containerd_runtime",
    "os_kernel_cmdline",
    "os_nccl_env",
    "os_nouveau_absent",
    "os_services",
    "os_sysctl",
    "perf_allreduce",
    "perf_cpu_gemm",
    "perf_cpu_membw",
    "perf_h2d",
    "perf_matmul_bf16",
    "perf_membw",
    "perf_p2p_latency",
    "perf_pcie_latency",
    "run",
    "security_tls_expiry",
    "serving_api_key",
    "serving_completion",
    "serving_golden",
    "serving_ready",
]
