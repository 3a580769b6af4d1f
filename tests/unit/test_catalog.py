"""Accelerator catalog: the parts the issue names, their units, and a source for every figure."""

import pytest

from llmrack import catalog
from llmrack.errors import NotFoundError

REQUIRED = ["a100-40g", "a100-80g", "a100-80g-pcie", "h100", "h200", "h800", "h20", "l40s", "ascend-910b",
            "ascend-910b4"]


def test_required_accelerators_present():
    assert set(REQUIRED) <= set(catalog.accelerators())


@pytest.mark.parametrize("name", REQUIRED)
def test_every_part_has_sources_and_sane_figures(name):
    acc = catalog.accelerator(name)
    assert {"compute_memory", "price_usd", "practical"} <= set(acc.sources)
    assert 16 * 1024 <= acc.memory_mib <= 200 * 1024
    assert 100 <= acc.bf16_tflops <= 2500
    assert 500 <= acc.hbm_gbps <= 10000
    assert 0 < acc.matmul_efficiency <= 1 and 0 < acc.hbm_efficiency <= 1
    assert acc.price_usd > 0


def test_ascend_figures_are_marked_uncertain_and_use_the_ascend_resource():
    for name in ("ascend-910b", "ascend-910b4"):
        acc = catalog.accelerator(name)
        assert acc.k8s_resource == "huawei.com/Ascend910"
        assert "hbm_gbps" in acc.uncertain
        assert acc.uncertainty_note() and "estimates" in acc.uncertainty_note()
    assert catalog.accelerator("a100-80g").uncertain == []


def test_guide_prices_and_fp8():
    a100 = catalog.accelerator("a100-80g")
    assert a100.price_usd == 15000  # guide: ~USD 15k per A100, ~USD 120k per 8-GPU server
    assert a100.price_usd * a100.devices_per_node == 120000
    assert catalog.accelerator("ascend-910b").price_usd == pytest.approx(0.7 * a100.price_usd)  # ~30 % less
    assert not a100.fp8 and catalog.accelerator("h100").fp8 and catalog.accelerator("l40s").fp8


def test_known_memory_sizes():
    assert catalog.accelerator("a100-40g").memory_mib == 40 * 1024
    assert catalog.accelerator("ascend-910b").memory_mib == 64 * 1024
    assert catalog.accelerator("ascend-910b4").memory_mib == 32 * 1024


def test_pcie_link_bandwidth():
    assert catalog.accelerator("a100-80g").pcie_gbps == pytest.approx(31.5, rel=0.01)  # Gen4 x16, one direction
    assert catalog.accelerator("h100").pcie_gbps == pytest.approx(63.0, rel=0.01)  # Gen5 x16


def test_unknown_name_suggests_nearest():
    with pytest.raises(NotFoundError, match=r"did you mean .*a100-80g"):
        catalog.accelerator("a100-80")


def test_smi_name_lookup():
    assert catalog.accelerator_for_smi_name("NVIDIA A100-SXM4-80GB").name == "a100-80g"
    assert catalog.accelerator_for_smi_name("910B3").name == "ascend-910b"
    assert catalog.accelerator_for_smi_name("Tesla T4") is None
